//! `StreamsBuilder::cdc_table` and `cdc_stream`: Debezium topics as tables
//! and streams (see [`crate::cdc`]).

use super::{Data, KStream, KTable, StreamsBuilder};
use crate::cdc::{default_dead_letter_topic, Cdc, ChangeEvent};
use crate::error_handler::ErrorHandler;
use crate::processor::cdc::{CdcCounters, CdcStreamDecoder, CdcTableDecoder};
use crate::serde::{Json, Nullable, SerdeRef};
use crate::topology::TopicRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

impl StreamsBuilder {
    /// A table of the rows of a Debezium topic, keyed by primary key: `c`,
    /// `u` and `r` events upsert `after`; `d` events and tombstones delete.
    /// Rows are stored as JSON; keys are re-partitioned by weir's JSON key
    /// serialization unless [`Cdc::co_partitioned`] says otherwise.
    ///
    /// ```
    /// use weir::{StreamsBuilder, cdc::Cdc};
    /// use weir::testing::TopologyTestDriver;
    /// use weir::serde::{Bytes, Json};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    /// struct User { user_id: i64, email: String }
    ///
    /// let builder = StreamsBuilder::new();
    /// builder.cdc_table::<i64, User>("mysql.app.users", Cdc::json().store("users"));
    /// let driver = TopologyTestDriver::new(builder.build().unwrap()).unwrap();
    /// let users = driver.input_topic("mysql.app.users", Bytes, Bytes);
    /// users.pipe(br#"{"user_id":1}"#.to_vec(),
    ///     br#"{"op":"c","before":null,"after":{"user_id":1,"email":"ada@example.com"},"source":{"snapshot":"false"}}"#.to_vec()).unwrap();
    /// let table = driver.store_contents("users", Json::<i64>::new(), Json::<User>::new()).unwrap();
    /// assert_eq!(table[&1].email, "ada@example.com");
    /// ```
    pub fn cdc_table<K, Row>(&self, topic: &str, cdc: Cdc<K, Row>) -> KTable<K, Row>
    where
        K: Data + Serialize + DeserializeOwned,
        Row: Data + Serialize + DeserializeOwned,
    {
        let key_serde: SerdeRef<K> = Arc::new(Json::<K>::new());
        let row_serde: SerdeRef<Row> = Arc::new(Json::<Row>::new());
        let on_error = cdc.on_error.unwrap_or_else(|| dead_letter_default(topic));
        let Cdc {
            keys,
            events,
            truncate,
            co_partitioned,
            store,
            ttl,
            time,
            ..
        } = cdc;
        let counted_topic = topic.to_string();
        let mut graph = self.graph.borrow_mut();
        let source = graph.add_decoding_source(TopicRef::External(topic.to_string()), Some(on_error), move |_| {
            CdcTableDecoder {
                keys: keys.clone(),
                events: events.clone(),
                truncate,
                time,
                counters: CdcCounters::new(&counted_topic),
            }
        });
        let input = if co_partitioned {
            graph.annotate(
                source,
                "cdc: declared co-partitioned; read in place, partitioned by Debezium's key bytes".into(),
            );
            source
        } else {
            let name = format!("{topic}-cdc");
            graph.annotate(
                source,
                format!(
                    "cdc: re-partitioned by weir's key serialization through {} (Debezium's key bytes \
                     differ between tables)",
                    TopicRef::Repartition(name.clone()).resolve("<application.id>")
                ),
            );
            let nullable_rows: SerdeRef<Option<Row>> = Arc::new(Nullable(row_serde.clone()));
            graph.add_repartition(source, &name, key_serde.clone(), nullable_rows)
        };
        drop(graph);
        super::materialize(&self.graph, input, topic, store, ttl, key_serde, row_serde)
    }

    /// The change events of a Debezium topic, keyed by the record key (`None`
    /// for keyless tables and truncate events). Tombstones carry no event and
    /// are only counted. The stream stays on Debezium's partitioning.
    ///
    /// ```
    /// use weir::{StreamsBuilder, Produced, cdc::{Cdc, ChangeEvent, Op}};
    /// use weir::serde::Json;
    /// # #[derive(serde::Serialize, serde::Deserialize, Clone)] struct Order { id: i64 }
    /// let builder = StreamsBuilder::new();
    /// builder
    ///     .cdc_stream::<i64, Order>("pg.public.orders", Cdc::json())
    ///     .filter(|_, event: &ChangeEvent<Order>| event.op == Op::Create)
    ///     .map_values(|event| event.after)
    ///     .to("new-orders", Produced::with(Json::new(), Json::new()));
    /// assert!(builder.build().is_ok());
    /// ```
    pub fn cdc_stream<K, Row>(&self, topic: &str, cdc: Cdc<K, Row>) -> KStream<Option<K>, ChangeEvent<Row>>
    where
        K: Data + DeserializeOwned,
        Row: Data + DeserializeOwned,
    {
        let on_error = cdc.on_error.clone().unwrap_or_else(|| dead_letter_default(topic));
        let (keys, events, time) = (cdc.keys, cdc.events, cdc.time);
        let counted_topic = topic.to_string();
        let node = self.graph.borrow_mut().add_decoding_source(
            TopicRef::External(topic.to_string()),
            Some(on_error),
            move |_| CdcStreamDecoder {
                keys: keys.clone(),
                events: events.clone(),
                time,
                counters: CdcCounters::new(&counted_topic),
            },
        );
        KStream::new(self.graph.clone(), node, false)
    }
}

fn dead_letter_default(topic: &str) -> ErrorHandler {
    ErrorHandler::DeadLetter(default_dead_letter_topic(topic))
}
