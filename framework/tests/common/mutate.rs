//! Inputs for fuzz-style property tests: arbitrary bytes, byte-level
//! mutations of real inputs, and structure-aware mutations of JSON ones
//! (a node of the document replaced by a value that decoders find hard:
//! extreme numbers, huge scales, wrong types, deep nesting).

use proptest::prelude::*;
use serde_json::{json, Value};

/// Byte strings that decoders of JSON and Kafka Connect find hard.
const TOKENS: &[&str] = &[
    "null",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\\u0000",
    "\"\\ud800\"",
    "1e999",
    "-0",
    "99999999999999999999999999999",
    "-9223372036854775808",
    "18446744073709551616",
    "\"scale\":\"100000\"",
    "\"scale\":100000",
    "\"scale\":-1",
    "\"op\":\"d\"",
    "\"op\":\"c\"",
    "\"op\":\"t\"",
    "\"__deleted\":\"true\"",
    "\"schema\":null",
    "\"payload\":null",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
];

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Token { at: usize, token: usize },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Edit::Token { at, token }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Edit::Delete { at, len }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let at = |at: usize, bytes: &Vec<u8>| at % (bytes.len() + 1);
        match edit {
            Edit::Flip { at: a, bit } if !bytes.is_empty() => {
                let i = a % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            Edit::Flip { .. } => {}
            Edit::Insert { at: a, bytes: new } => {
                let i = at(*a, &bytes);
                bytes.splice(i..i, new.iter().copied());
            }
            Edit::Token { at: a, token } => {
                let i = at(*a, &bytes);
                bytes.splice(i..i, TOKENS[*token].bytes());
            }
            Edit::Delete { at: a, len } => {
                let i = at(*a, &bytes);
                let end = (i + len).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::Truncate { at: a } => {
                let i = at(*a, &bytes);
                bytes.truncate(i);
            }
        }
    }
    bytes
}

/// Byte-level mutations of one of `seeds` (1 to 6 edits), or the seed as is.
pub fn mutated_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty());
    (0..seeds.len(), prop::collection::vec(edit(), 0..6))
        .prop_map(move |(seed, edits)| apply(seeds[seed].clone(), &edits))
}

/// Values that JSON decoders of Debezium's types find hard.
fn hard_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e300),
        json!(-1e-300),
        json!(0.5),
        json!(""),
        json!("x"),
        json!("AAAA"),
        json!("-"),
        json!("9".repeat(200)),
        json!(format!("0.{}", "1".repeat(70_000))),
        json!("2023-13-45T99:99:99+99:00"),
        json!({}),
        json!([]),
        json!({"scale": 100_000, "value": "AQ=="}),
        json!({"scale": -1, "value": "AQ=="}),
        json!({"scale": "100000"}),
        json!("100000"),
        json!("c"),
        json!("d"),
        json!("t"),
        json!("m"),
        json!("true"),
        nested(100),
    ]
}

/// `[[[…]]]`, `depth` deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
}

/// The JSON pointers of every node of `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pointers(
                    child,
                    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Structure-aware mutations of one of `seeds` (JSON documents): up to four
/// nodes each replaced by a hard value or removed from its object.
pub fn mutated_json(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let documents: Vec<Value> = seeds
        .iter()
        .map(|seed| serde_json::from_slice(seed).expect("JSON seeds are JSON"))
        .collect();
    let hard = hard_values();
    let choices = hard.len() + 1;
    (
        0..documents.len(),
        prop::collection::vec((any::<usize>(), 0..choices), 1..4),
    )
        .prop_map(move |(seed, edits)| {
            let mut document = documents[seed].clone();
            for (node, choice) in edits {
                let mut all = Vec::new();
                pointers(&document, String::new(), &mut all);
                let pointer = &all[node % all.len()];
                if choice == hard.len() {
                    remove(&mut document, pointer);
                } else if let Some(slot) = document.pointer_mut(pointer) {
                    *slot = hard[choice].clone();
                }
            }
            serde_json::to_vec(&document).expect("JSON serializes")
        })
}

/// Removes the node at `pointer` from its object, if its parent is one.
fn remove(document: &mut Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    if let Some(Value::Object(map)) = document.pointer_mut(parent) {
        map.remove(&key.replace("~1", "/").replace("~0", "~"));
    }
}

/// Bytes of any kind: arbitrary, or mutations (byte-level or, for JSON
/// seeds, structure-aware) of real inputs.
pub fn hostile(seeds: Vec<Vec<u8>>, json: bool) -> BoxedStrategy<Vec<u8>> {
    let arbitrary = prop::collection::vec(any::<u8>(), 0..64);
    if json {
        prop_oneof![
            1 => arbitrary,
            3 => mutated_bytes(seeds.clone()),
            3 => mutated_json(seeds),
        ]
        .boxed()
    } else {
        prop_oneof![1 => arbitrary, 4 => mutated_bytes(seeds)].boxed()
    }
}

/// The number of cases per fuzz target: `WEIR_FUZZ_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("WEIR_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
