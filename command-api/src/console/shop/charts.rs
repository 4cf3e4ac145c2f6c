//! The dashboard's analytics charts, drawn on the server as SVG like the price
//! chart (`console::chart`): purchases per UTC day stacked by the status they
//! reached, revenue per day in one currency (bars below the zero line when
//! cancellations outweighed confirmations), and the purchases' status mix now. Each
//! chart is an image with a title and a description in words, and the page puts a
//! table of every number beside it; colours come from the stylesheet's
//! `series-<status>` classes, so they follow the light and dark themes.

use std::fmt::Write as _;

use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The statuses a purchase reaches, in the order the stacks are drawn (bottom up)
/// and the legend lists them.
pub(crate) const SERIES: [&str; 6] = [
    "placed",
    "confirmed",
    "rejected",
    "cancelled",
    "shipped",
    "delivered",
];

/// One day of the purchases chart: its `YYYY-MM-DD` and a count per [`SERIES`].
#[derive(Debug, Clone)]
pub(crate) struct StackedDay {
    pub day: String,
    pub counts: [i64; 6],
}

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_bottom() -> f64 {
    HEIGHT - BOTTOM
}

/// The opening of a chart: the image's title and description, its axes.
fn open(svg: &mut String, id: &str, title: &str, description: &str) {
    let _ = write!(
        svg,
        r#"<svg class="chart analytics" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{title}</title><desc id="{id}-desc">{description}</desc>"#,
        title = escape(title),
        description = escape(description),
    );
    let bottom = plot_bottom();
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>"#,
        WIDTH - RIGHT
    );
}

/// The first and last day under the horizontal axis.
fn day_labels(svg: &mut String, first: &str, last: &str) {
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
        HEIGHT - 8.0,
        escape(first),
        WIDTH - RIGHT,
        HEIGHT - 8.0,
        escape(last)
    );
}

/// A value beside the vertical axis at height `y`.
fn value_label(svg: &mut String, y: f64, text: &str) {
    let _ = write!(
        svg,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
        LEFT - 6.0,
        y + 4.0,
        escape(text)
    );
}

/// Purchases per day, one bar a day stacked by the status reached that day; empty
/// when there is no day.
pub(crate) fn purchases_per_day(days: &[StackedDay]) -> String {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return String::new();
    };
    let highest = days
        .iter()
        .map(|day| day.counts.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let totals: Vec<String> = SERIES
        .iter()
        .enumerate()
        .map(|(at, series)| {
            let sum: i64 = days.iter().map(|day| day.counts[at]).sum();
            format!("{sum} {series}")
        })
        .collect();
    let mut svg = String::new();
    open(
        &mut svg,
        "chart-purchases",
        "Purchases per day, by the status reached",
        &format!(
            "{} days from {} to {}: {}; at most {highest} in one day.",
            days.len(),
            first.day,
            last.day,
            totals.join(", ")
        ),
    );
    value_label(&mut svg, TOP, &highest.to_string());
    value_label(&mut svg, plot_bottom(), "0");
    day_labels(&mut svg, &first.day, &last.day);
    let band = plot_width() / days.len() as f64;
    let scale = (plot_bottom() - TOP) / highest as f64;
    for (index, day) in days.iter().enumerate() {
        let x = LEFT + band * index as f64 + band * 0.15;
        let mut y = plot_bottom();
        for (at, series) in SERIES.iter().enumerate() {
            let count = day.counts[at];
            if count <= 0 {
                continue;
            }
            let height = count as f64 * scale;
            y -= height;
            let _ = write!(
                svg,
                r#"<rect class="series-{series}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}"><title>{}: {count} {series}</title></rect>"#,
                band * 0.7,
                day.day
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Revenue per day in `currency`: one bar a day from the zero line, below it on a
/// day whose cancellations outweighed its confirmations; empty without a day.
pub(crate) fn revenue_per_day(currency: &str, days: &[(String, Decimal)]) -> String {
    let (Some((first, _)), Some((last, _))) = (days.first(), days.last()) else {
        return String::new();
    };
    let amounts = days.iter().map(|(_, amount)| *amount);
    let high = amounts
        .clone()
        .chain([Decimal::ZERO])
        .max()
        .unwrap_or_default();
    let low = amounts
        .clone()
        .chain([Decimal::ZERO])
        .min()
        .unwrap_or_default();
    let total: Decimal = amounts.sum();
    let span = (to_f64(high) - to_f64(low)).max(f64::EPSILON);
    let y = |amount: Decimal| TOP + (to_f64(high) - to_f64(amount)) / span * (plot_bottom() - TOP);
    let id = format!("chart-revenue-{}", currency.to_lowercase());
    let mut svg = String::new();
    open(
        &mut svg,
        &id,
        &format!("Revenue per day in {currency}"),
        &format!(
            "{} days from {first} to {last}: {total} {currency} in all, between {low} and {high} {currency} a day.",
            days.len()
        ),
    );
    value_label(&mut svg, y(high), &high.to_string());
    if low < Decimal::ZERO {
        value_label(&mut svg, y(low), &low.to_string());
    }
    let zero = y(Decimal::ZERO);
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{zero:.1}" x2="{}" y2="{zero:.1}"/>"#,
        WIDTH - RIGHT
    );
    value_label(&mut svg, zero, "0");
    day_labels(&mut svg, first, last);
    let band = plot_width() / days.len() as f64;
    for (index, (day, amount)) in days.iter().enumerate() {
        if amount.is_zero() {
            continue;
        }
        let x = LEFT + band * index as f64 + band * 0.15;
        let (top, class) = if *amount > Decimal::ZERO {
            (y(*amount), "revenue")
        } else {
            (zero, "revenue-negative")
        };
        let height = (y(*amount) - zero).abs();
        let _ = write!(
            svg,
            r#"<rect class="{class}" x="{x:.1}" y="{top:.1}" width="{:.1}" height="{height:.1}"><title>{day}: {amount} {currency}</title></rect>"#,
            band * 0.7,
            currency = escape(currency),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// How many purchases are in each status now, one horizontal bar each.
pub(crate) fn status_distribution(statuses: &[(String, i64)]) -> String {
    if statuses.is_empty() {
        return String::new();
    }
    let highest = statuses
        .iter()
        .map(|(_, count)| *count)
        .max()
        .unwrap_or(0)
        .max(1);
    let row = 26.0;
    let height = TOP * 2.0 + row * statuses.len() as f64;
    let mut svg = String::new();
    let description: Vec<String> = statuses
        .iter()
        .map(|(status, count)| format!("{count} {status}"))
        .collect();
    let _ = write!(
        svg,
        r#"<svg class="chart analytics" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-statuses-title chart-statuses-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-statuses-title">Purchases by status now</title><desc id="chart-statuses-desc">{}.</desc>"#,
        escape(&description.join(", "))
    );
    let label_width = 96.0;
    let bar_space = WIDTH - label_width - RIGHT - 48.0;
    for (index, (status, count)) in statuses.iter().enumerate() {
        let top = TOP + row * index as f64;
        let width = (*count as f64 / highest as f64 * bar_space).max(0.0);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{status}</text><rect class="series-{status}" x="{label_width}" y="{:.1}" width="{width:.1}" height="{:.1}"/><text x="{:.1}" y="{:.1}">{count}</text>"#,
            label_width - 8.0,
            top + row * 0.65,
            top + row * 0.15,
            row * 0.7,
            label_width + width + 6.0,
            top + row * 0.65,
            status = escape(status),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Text for SVG: what a status, a day or a currency code cannot contain anyway,
/// escaped all the same.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn to_f64(amount: Decimal) -> f64 {
    amount.to_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: &str, counts: [i64; 6]) -> StackedDay {
        StackedDay {
            day: day.to_owned(),
            counts,
        }
    }

    #[test]
    fn the_purchases_are_stacked_by_status_and_said_in_words() {
        let svg = purchases_per_day(&[
            day("2026-12-01", [2, 1, 1, 0, 0, 0]),
            day("2026-12-02", [0, 0, 0, 0, 0, 0]),
            day("2026-12-03", [1, 1, 0, 0, 1, 1]),
        ]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // One rectangle per status with a count on a day.
        assert_eq!(svg.matches("<rect").count(), 7);
        assert!(
            svg.contains("3 days from 2026-12-01 to 2026-12-03"),
            "{svg}"
        );
        assert!(
            svg.contains("3 placed, 2 confirmed, 1 rejected, 0 cancelled, 1 shipped, 1 delivered")
        );
        assert!(svg.contains("at most 4 in one day"));
        // The busiest day's stack reaches the top of the plot.
        assert!(svg.contains(r#"y="12.0""#), "{svg}");
        assert_eq!(purchases_per_day(&[]), "");
    }

    #[test]
    fn a_day_of_net_cancellations_is_drawn_below_the_zero_line() {
        let days = [
            ("2026-12-01".to_owned(), Decimal::new(3000, 2)),
            ("2026-12-02".to_owned(), Decimal::new(-1000, 2)),
            ("2026-12-03".to_owned(), Decimal::ZERO),
        ];
        let svg = revenue_per_day("USD", &days);
        assert_eq!(svg.matches(r#"class="revenue""#).count(), 1);
        assert_eq!(svg.matches(r#"class="revenue-negative""#).count(), 1);
        assert!(
            svg.contains("20.00 USD in all, between -10.00 and 30.00 USD a day"),
            "{svg}"
        );
        assert!(svg.contains(r#"id="chart-revenue-usd-title""#));
    }

    #[test]
    fn the_status_mix_has_a_bar_per_status() {
        let statuses = vec![
            ("pending".to_owned(), 1),
            ("confirmed".to_owned(), 4),
            ("rejected".to_owned(), 0),
        ];
        let svg = status_distribution(&statuses);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("1 pending, 4 confirmed, 0 rejected."), "{svg}");
        assert_eq!(status_distribution(&[]), "");
    }
}
