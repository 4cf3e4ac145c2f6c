//! Extraction accuracy on pages in the style of real shop platforms
//! (`tests/pages/`, expectations in `tests/pages.json`): every page must read as
//! expected. The table is printed (`cargo nextest run --no-capture -E 'test(corpus)'`).

use orders_workers::extract::extract;
use serde_json::Value;

#[test]
fn every_page_of_the_corpus_reads_as_expected() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let manifest: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(root.join("pages.json")).unwrap()).unwrap();
    let mut wrong = Vec::new();
    println!(
        "{:<48} {:<10} {:<10} {:<9} {:<12} {:<9}",
        "page", "status", "price", "currency", "availability", "extractor"
    );
    for case in &manifest {
        let file = case["file"].as_str().unwrap();
        let html = std::fs::read_to_string(root.join("pages").join(file)).unwrap();
        let got = extract(&html, case["selector"].as_str()).to_json();
        println!(
            "{:<48} {:<10} {:<10} {:<9} {:<12} {}",
            case["style"].as_str().unwrap(),
            got["status"].as_str().unwrap(),
            got["price"].as_str().unwrap_or("-"),
            got["currency"].as_str().unwrap_or("-"),
            got["availability"].as_str().unwrap(),
            got["extractor"].as_str().unwrap_or("-"),
        );
        for field in ["status", "price", "currency", "availability"] {
            if let Some(expected) = case.get(field) {
                if got[field] != *expected {
                    wrong.push(format!(
                        "{file}: {field} {} (expected {expected})",
                        got[field]
                    ));
                }
            }
        }
    }
    let right = manifest.len()
        - wrong
            .iter()
            .map(|w| w.split(':').next().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    println!("{right} of {} pages read as expected", manifest.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
}
