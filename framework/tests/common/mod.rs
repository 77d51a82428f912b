//! Helpers shared by the framework's integration tests.
#![allow(dead_code)]

use weir::state::RocksDbConfig;
use weir::testing::{TestDriverConfig, TestStores, TopologyTestDriver};
use weir::Topology;

/// Both store backends; every stateful test runs on each.
pub fn backends() -> [TestStores; 2] {
    [
        TestStores::InMemory,
        TestStores::RocksDb(RocksDbConfig {
            block_cache_bytes: 8 << 20,
            write_buffer_bytes: 4 << 20,
            memtable_bytes: 1 << 20,
        }),
    ]
}

/// A driver with every topic on `partitions` partitions.
pub fn driver(topology: Topology, stores: TestStores, partitions: i32) -> TopologyTestDriver {
    merging(topology, stores, partitions, false)
}

/// [`driver`], with tables' changes merged until `driver.commit()` or not.
pub fn merging(topology: Topology, stores: TestStores, partitions: i32, merge: bool) -> TopologyTestDriver {
    TopologyTestDriver::with_config(
        topology,
        TestDriverConfig::default()
            .default_partitions(partitions)
            .stores(stores)
            .merge_table_changes(merge),
    )
    .expect("the topology is valid")
}

pub fn s(text: &str) -> String {
    text.to_string()
}
pub mod mutate;
