//! Stateless stream nodes: map, filter, flat_map, peek, merge and split.

use super::{Forwarder, Processor, ProcessorContext};
use crate::error::WeirError;
use crate::record::Record;
use std::sync::Arc;

/// Turns one record into zero or more, through a callback so that no
/// intermediate collection is allocated per record.
pub(crate) type Transform<KI, VI, KO, VO> = Arc<dyn Fn(Record<KI, VI>, &mut dyn FnMut(Record<KO, VO>)) + Send + Sync>;

/// Every stateless stream operation is one of these with its own transform.
pub(crate) struct StatelessNode<KI, VI, KO, VO> {
    pub transform: Transform<KI, VI, KO, VO>,
    pub out: Forwarder<KO, VO>,
}

impl<KI, VI, KO: Clone + 'static, VO: Clone + 'static> Processor<KI, VI> for StatelessNode<KI, VI, KO, VO> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<KI, VI>) -> Result<(), WeirError> {
        let mut result = Ok(());
        (self.transform)(record, &mut |output| {
            if result.is_ok() {
                result = self.out.forward(ctx, output);
            }
        });
        result
    }
}

/// The transform that passes every record on unchanged (merges, branches).
pub(crate) fn identity<K: 'static, V: 'static>() -> Transform<K, V, K, V> {
    Arc::new(|record: Record<K, V>, emit: &mut dyn FnMut(Record<K, V>)| emit(record))
}

pub(crate) type Predicate<K, V> = Arc<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// Sends each record to the first branch whose predicate holds; the branch
/// without a predicate (the default branch), if any, is last.
pub(crate) struct SplitNode<K, V> {
    pub predicates: Vec<Predicate<K, V>>,
    pub has_default: bool,
    pub out: Forwarder<K, V>,
}

impl<K: Clone + 'static, V: Clone + 'static> Processor<K, V> for SplitNode<K, V> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, record: Record<K, V>) -> Result<(), WeirError> {
        match self.predicates.iter().position(|p| p(&record.key, &record.value)) {
            Some(branch) => self.out.forward_to(branch, ctx, record),
            None if self.has_default => self.out.forward_to(self.predicates.len(), ctx, record),
            None => Ok(()),
        }
    }
}
