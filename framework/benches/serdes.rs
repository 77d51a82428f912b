//! The cost of one record through a value serde, JSON against Avro (the
//! Confluent wire format, schemas from the in-process registry and cached
//! after the first record): the user-profile god object, serialized and
//! deserialized.
//!
//! Run: `cargo bench -p weir --bench serdes`

use apache_avro::AvroSchema;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use weir::avro::{Avro, SchemaRegistry};
use weir::serde::{Json, Serde};
use weir::testing::schema_registry::TestSchemaRegistry;

#[derive(Clone, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "weir.bench")]
struct GodObject {
    user_id: i64,
    new_user_id: String,
    email: String,
    dark_mode: Option<bool>,
}

const TOPIC: &str = "user-god-object";

fn god_object() -> GodObject {
    GodObject {
        user_id: 4_217,
        new_user_id: "u2-4217".into(),
        email: "user4217@example.com".into(),
        dark_mode: Some(true),
    }
}

fn round_trip<S: Serde<GodObject>>(c: &mut Criterion, name: &str, serde: &S) {
    let value = god_object();
    let bytes = serde.to_bytes(TOPIC, &value).unwrap().unwrap();
    println!("{name}: {} bytes", bytes.len());
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(128);
    group.bench_function("serialize", |b| {
        b.iter(|| {
            out.clear();
            serde.serialize(TOPIC, black_box(&value), &mut out).unwrap();
        })
    });
    group.bench_function("deserialize", |b| {
        b.iter(|| serde.deserialize(TOPIC, Some(black_box(&bytes))).unwrap())
    });
    group.finish();
}

fn serdes(c: &mut Criterion) {
    round_trip(c, "json", &Json::<GodObject>::new());
    let registry = TestSchemaRegistry::start().unwrap();
    let client = SchemaRegistry::new(registry.url()).unwrap();
    round_trip(c, "avro", &Avro::<GodObject>::value(&client));
}

criterion_group!(benches, serdes);
criterion_main!(benches);
