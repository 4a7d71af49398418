//! Column-name lists shared between results: what every SQL backend's row decoding uses.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Column-name lists recently seen by one pool, so a result whose statement has the same
/// columns as an earlier one shares that list instead of allocating a `String` per column per
/// query. A few slots picked by a cheap digest of the columns; a hit is checked name by name, so
/// a stale or colliding slot only costs the allocation it would have cost anyway.
#[derive(Default)]
pub(crate) struct ColumnCache {
    slots: [ArcSwapOption<Arc<[String]>>; COLUMN_SLOTS],
}

const COLUMN_SLOTS: usize = 8;

impl ColumnCache {
    /// The shared list of these column names.
    pub(crate) fn names_of<'c>(
        &self,
        names: impl ExactSizeIterator<Item = &'c str> + Clone,
    ) -> Arc<[String]> {
        let len = names.len();
        let digest = names
            .clone()
            .fold(len, |d, n| d.wrapping_mul(31).wrapping_add(n.len()));
        let slot = &self.slots[digest % COLUMN_SLOTS];
        if let Some(cached) = &*slot.load()
            && cached.len() == len
            && cached.iter().zip(names.clone()).all(|(c, n)| c == n)
        {
            return Arc::clone(cached);
        }
        let list: Arc<[String]> = names.map(str::to_owned).collect();
        slot.store(Some(Arc::new(list.clone())));
        list
    }
}
