//! Leader election for single-active duties (the relay, each view's projector, and
//! the scheduler): one key per duty in a JetStream key-value bucket whose
//! `max_age` is the lease.
//!
//! A contender becomes leader by creating the key (which fails while another holds
//! it) and stays leader by updating it, at the revision it last wrote, well within
//! the lease. A leader that misses its renewals (paused, partitioned, killed) loses
//! the key when the bucket ages it out, and another contender creates it. Leadership
//! is advisory for safety: what a deposed leader might still do must be refused by
//! the resource itself (the relay's publishes name the stream sequence they follow).

use std::time::Duration;

use async_nats::jetstream::kv;

/// A duty's key in the leader bucket, contended for by one instance.
pub struct LeaderLease {
    bucket: kv::Store,
    duty: String,
    holder: String,
    /// The revision this instance last wrote while it holds the key.
    revision: Option<u64>,
}

impl LeaderLease {
    /// `holder` names this instance in the key (e.g. host and process id), for
    /// operators looking at the bucket.
    pub fn new(bucket: kv::Store, duty: impl Into<String>, holder: impl Into<String>) -> Self {
        Self {
            bucket,
            duty: duty.into(),
            holder: holder.into(),
            revision: None,
        }
    }

    pub fn is_held(&self) -> bool {
        self.revision.is_some()
    }

    /// Tries to become leader; `Ok(true)` when this instance now holds the key.
    pub async fn try_acquire(&mut self) -> anyhow::Result<bool> {
        match self
            .bucket
            .create(&self.duty, self.holder.clone().into())
            .await
        {
            Ok(revision) => {
                self.revision = Some(revision);
                tracing::info!(duty = %self.duty, holder = %self.holder, "became leader");
                Ok(true)
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(anyhow::Error::new(error).context("contending for leadership")),
        }
    }

    /// Renews the lease; `Ok(false)` when it was lost (someone else holds the key, or
    /// it aged out and was taken).
    pub async fn renew(&mut self) -> anyhow::Result<bool> {
        let Some(revision) = self.revision else {
            return Ok(false);
        };
        match self
            .bucket
            .update(&self.duty, self.holder.clone().into(), revision)
            .await
        {
            Ok(revision) => {
                self.revision = Some(revision);
                Ok(true)
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(duty = %self.duty, holder = %self.holder, "lost leadership");
                self.revision = None;
                Ok(false)
            }
            Err(error) => {
                // Unknown whether the update landed: behave as deposed, to be safe.
                self.revision = None;
                Err(anyhow::Error::new(error).context("renewing leadership"))
            }
        }
    }

    /// Gives the key up (at shutdown), so a standby takes over without waiting for
    /// the lease to age out.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision.take() {
            let _ = self
                .bucket
                .delete_expect_revision(&self.duty, Some(revision))
                .await;
        }
    }
}

/// How often a leader renews its lease: a third of it, so two renewals may fail
/// before it ages out.
pub fn renewal_interval(lease: Duration) -> Duration {
    lease / 3
}

/// Runs `work` whenever this instance holds `lease`, renewing the lease meanwhile,
/// until `shutdown` is cancelled (then the lease is given up). `work` runs until it
/// fails; it is started again, after a pause, as long as the lease is held. When the
/// lease is lost, `work` is dropped at its next await and this instance stands by.
///
/// `work` must be safe to stop at any await and to run twice at once on two
/// instances (a lease can be lost without the holder knowing yet): the duties that
/// use this guard their writes themselves (a projector by its checkpoint row).
pub async fn lead<W, F>(
    mut lease: LeaderLease,
    lease_duration: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut work: W,
) -> anyhow::Result<()>
where
    W: FnMut() -> F,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    enum Turn {
        Shutdown,
        WorkEnded(anyhow::Result<()>),
        LeaseLost,
    }
    let shutdown = shutdown.cancelled_owned();
    tokio::pin!(shutdown);
    let every = renewal_interval(lease_duration);
    loop {
        loop {
            match lease.try_acquire().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "contending failed"),
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
        let mut renew_at = tokio::time::Instant::now() + every;
        loop {
            let renewing = async {
                loop {
                    tokio::time::sleep_until(renew_at).await;
                    match lease.renew().await {
                        Ok(true) => renew_at = tokio::time::Instant::now() + every,
                        Ok(false) => return,
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "renewing failed");
                            return;
                        }
                    }
                }
            };
            let turn = tokio::select! {
                () = &mut shutdown => Turn::Shutdown,
                result = work() => Turn::WorkEnded(result),
                () = renewing => Turn::LeaseLost,
            };
            match turn {
                Turn::Shutdown => {
                    lease.release().await;
                    return Ok(());
                }
                Turn::LeaseLost => break,
                Turn::WorkEnded(result) => {
                    if let Err(error) = result {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "leader's work failed; retrying"
                        );
                    }
                    tokio::select! {
                        () = &mut shutdown => {
                            lease.release().await;
                            return Ok(());
                        }
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
}
