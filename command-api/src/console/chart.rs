//! The price-history chart, drawn on the server as SVG: a line through the prices
//! seen, the target as a dashed line, the lowest and highest price and the first
//! and last day on the axes. Works without JavaScript, and a screen reader reads
//! its title and description (the table beside it has every price).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The SVG of `points` (time, price) against `target`, in `currency`; empty when
/// there is no point.
pub fn price_chart(points: &[(DateTime<Utc>, Decimal)], target: Decimal, currency: &str) -> String {
    let Some((first, _)) = points.first() else {
        return String::new();
    };
    let last = points.last().map_or(*first, |(time, _)| *time);
    let prices = points.iter().map(|(_, price)| *price);
    let low = prices.clone().chain([target]).min().unwrap_or(target);
    let high = prices.chain([target]).max().unwrap_or(target);
    let (low_f, high_f) = (to_f64(low), to_f64(high));
    let span = (high_f - low_f).max(f64::EPSILON);
    let seconds = (last - *first).num_seconds().max(1) as f64;
    let x = |time: DateTime<Utc>| {
        if points.len() == 1 {
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (time - *first).num_seconds() as f64 / seconds * (WIDTH - LEFT - RIGHT)
        }
    };
    let y = |price: Decimal| {
        if high == low {
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0
        } else {
            TOP + (high_f - to_f64(price)) / span * (HEIGHT - TOP - BOTTOM)
        }
    };
    let mut svg = String::new();
    let latest = points.last().map_or(Decimal::ZERO, |(_, price)| *price);
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Price history</title><desc id="chart-desc">{} prices from {} to {}, between {low} and {high} {currency}; the latest is {latest} {currency}; the target is {target} {currency}.</desc>"#,
        points.len(),
        first.format("%Y-%m-%d"),
        last.format("%Y-%m-%d"),
    );
    let bottom = HEIGHT - BOTTOM;
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>"#,
        WIDTH - RIGHT
    );
    let target_y = y(target);
    let _ = write!(
        svg,
        r#"<line class="target" x1="{LEFT}" y1="{target_y:.1}" x2="{}" y2="{target_y:.1}"/>"#,
        WIDTH - RIGHT
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{high}</text><text x="{}" y="{:.1}" text-anchor="end">{low}</text>"#,
        LEFT - 6.0,
        y(high) + 4.0,
        LEFT - 6.0,
        y(low) + 4.0
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
        HEIGHT - 8.0,
        first.format("%Y-%m-%d"),
        WIDTH - RIGHT,
        HEIGHT - 8.0,
        last.format("%Y-%m-%d")
    );
    let line: Vec<String> = points
        .iter()
        .map(|(time, price)| format!("{:.1},{:.1}", x(*time), y(*price)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline fill="none" stroke="currentColor" stroke-width="2" points="{}"/>"#,
        line.join(" ")
    );
    for (time, price) in points {
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="currentColor"/>"#,
            x(*time),
            y(*price)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn to_f64(amount: Decimal) -> f64 {
    amount.to_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn the_chart_spans_the_prices_and_the_target_and_says_so_in_words() {
        let points = [
            (at(1), Decimal::new(350_000, 2)),
            (at(2), Decimal::new(320_000, 2)),
            (at(4), Decimal::new(299_900, 2)),
        ];
        let svg = price_chart(&points, Decimal::new(310_000, 2), "UAH");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(
            svg.contains("3 prices from 2026-12-01 to 2026-12-04, between 2999.00 and 3500.00 UAH")
        );
        assert!(svg.contains("the latest is 2999.00 UAH; the target is 3100.00 UAH"));
        // The highest price is at the top of the plot, the lowest at its bottom.
        assert!(svg.contains(r#"points="64.0,12.0 "#), "{svg}");
        assert!(svg.contains(",212.0\"/>"), "{svg}");
    }

    #[test]
    fn no_price_draws_nothing_and_one_price_draws_one_point() {
        assert_eq!(price_chart(&[], Decimal::ONE, "UAH"), "");
        let one = price_chart(&[(at(1), Decimal::ONE)], Decimal::ONE, "UAH");
        assert_eq!(one.matches("<circle").count(), 1);
    }
}
