//! The scraper worker: for each `PriceCheckRequested` of the log, fetch the page
//! (SSRF-safe, robots.txt, host spacing: [`crate::fetch`]), read its price
//! ([`crate::extract`]) and record the result on the check: an observation, or a
//! typed failure. Instances compete for the requests (one durable consumer).
//!
//! A request whose check already has a result (a redelivery after a crash between
//! recording and acknowledging) is acknowledged without fetching again. A crash
//! before recording leaves the message unacknowledged: it is delivered again, to
//! this or another instance, and the check is retried, not lost.

use orders_application::price_checks;
use orders_domain::money::Money;
use orders_domain::price_check::{
    CheckFailureReason, FetchFacts, PagePrice, PageReading, PriceCheckCommand, PriceCheckEvent,
};
use orders_nats::LogEvent;
use orders_store::event_store::EventStore;

use crate::consumer::Outcome;
use crate::extract::{extract, Extraction, Status};
use crate::fetch::{FetchFailure, FetchedPage, PageFetcher};
use crate::work_metadata::{caused_by, payload};

pub struct ScraperWorker {
    events: EventStore,
    fetcher: PageFetcher,
}

impl ScraperWorker {
    pub fn new(events: EventStore, fetcher: PageFetcher) -> Self {
        Self { events, fetcher }
    }

    /// The step for one log message.
    pub async fn handle(&self, event: LogEvent) -> Outcome {
        if event.aggregate_type != "price_check" || event.event_type != "PriceCheckRequested" {
            return Outcome::Done;
        }
        let requested: PriceCheckEvent = match payload(&event) {
            Ok(requested) => requested,
            Err(error) => return Outcome::GiveUp(error),
        };
        let PriceCheckEvent::PriceCheckRequested { url, selector, .. } = requested else {
            return Outcome::Done;
        };
        match price_checks::is_completed(&self.events, &event.aggregate_id).await {
            Ok(true) => return Outcome::Done,
            Ok(false) => {}
            Err(error) => {
                return Outcome::Retry(anyhow::Error::new(error).context("loading the check"))
            }
        }
        let command = match self.fetcher.fetch(url.as_url()).await {
            Ok(page) => {
                let selector = selector.clone();
                let body = page.body.clone();
                // Parsing is CPU work on a non-Send document: off the async threads.
                let extraction =
                    match tokio::task::spawn_blocking(move || extract(&body, selector.as_deref()))
                        .await
                    {
                        Ok(extraction) => extraction,
                        Err(error) => {
                            return Outcome::Retry(anyhow::anyhow!("reading the page: {error}"))
                        }
                    };
                command_for_page(&page, &extraction)
            }
            Err(FetchFailure::HostGateUnavailable { detail }) => {
                // Our infrastructure, not the shop: try again, record nothing.
                return Outcome::Retry(anyhow::anyhow!("the host gate is unavailable: {detail}"));
            }
            Err(failure) => command_for_failure(&failure),
        };
        let metadata = caused_by(&event, "system:scraper");
        match price_checks::record_result(&self.events, &event.aggregate_id, command, &metadata)
            .await
        {
            Ok(_) => Outcome::Done,
            Err(error) if error.may_pass() => {
                Outcome::Retry(anyhow::Error::new(error).context("recording the check's result"))
            }
            Err(error) => {
                Outcome::GiveUp(anyhow::Error::new(error).context("recording the check's result"))
            }
        }
    }
}

fn fetch_facts(page: &FetchedPage) -> FetchFacts {
    FetchFacts {
        http_status: Some(page.status),
        fetch_ms: u32::try_from(page.timings.overall_ms).ok(),
        redirects: u8::try_from(page.redirects).unwrap_or(u8::MAX),
    }
}

/// What a read page amounts to: a reading (the check decides whether its currency
/// fits the order), or a failure when the page has no single price.
pub fn command_for_page(page: &FetchedPage, extraction: &Extraction) -> PriceCheckCommand {
    let fetch = fetch_facts(page);
    match extraction.status {
        Status::Ok => PriceCheckCommand::RecordReading {
            reading: PageReading {
                price: extraction.price.as_ref().map(|candidate| PagePrice {
                    amount: candidate.price,
                    currency: candidate.currency,
                }),
                availability: extraction.availability,
                title: extraction.title.clone(),
                extractor: extraction.extractor.map(str::to_owned),
            },
            fetch,
        },
        // No price, but the page says the product cannot be bought: news anyway.
        Status::Failed if extraction.availability.is_unavailable() => {
            PriceCheckCommand::RecordReading {
                reading: PageReading {
                    price: None,
                    availability: extraction.availability,
                    title: extraction.title.clone(),
                    extractor: extraction.extractor.map(str::to_owned),
                },
                fetch,
            }
        }
        Status::Ambiguous => PriceCheckCommand::RecordFailure {
            reason: CheckFailureReason::Ambiguous,
            detail: extraction.reason.clone(),
            candidates: extraction
                .candidates
                .iter()
                .filter_map(|candidate| {
                    candidate
                        .currency
                        .and_then(|currency| Money::new(candidate.price, currency).ok())
                })
                .collect(),
            fetch,
        },
        Status::Failed => PriceCheckCommand::RecordFailure {
            reason: if extraction
                .reason
                .as_deref()
                .is_some_and(|reason| reason.contains("selector"))
            {
                CheckFailureReason::InvalidSelector
            } else {
                CheckFailureReason::NoPrice
            },
            detail: extraction.reason.clone(),
            candidates: vec![],
            fetch,
        },
    }
}

/// A fetch that failed, as the check's typed failure.
pub fn command_for_failure(failure: &FetchFailure) -> PriceCheckCommand {
    let reason = CheckFailureReason::from_name(failure.reason()).unwrap_or(match failure {
        FetchFailure::InvalidUrl { .. } => CheckFailureReason::UnsupportedScheme,
        _ => CheckFailureReason::InvalidResponse,
    });
    PriceCheckCommand::RecordFailure {
        reason,
        detail: Some(failure.to_string()),
        candidates: vec![],
        fetch: FetchFacts {
            http_status: failure.http_status(),
            fetch_ms: None,
            redirects: 0,
        },
    }
}
