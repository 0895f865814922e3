//! What each live allocation took and where, so that its free gives back
//! exactly that: an open-addressing table in memory mapped for it (never
//! the process's heap), grown by doubling, behind one mutex. Only
//! allocations made through the hooks are here; a free of anything else
//! changes nothing.

use std::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// A `CUdeviceptr` from the `cuMemAlloc*` calls.
    Pointer = 1,
    /// A `CUmemGenericAllocationHandle` from `cuMemCreate`.
    Handle = 2,
    /// A `CUarray`.
    Array = 3,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    key: u64,
    size: u64,
    /// 0 when empty, else the [`Kind`].
    kind: u32,
    index: u32,
}

const EMPTY: Entry = Entry {
    key: 0,
    size: 0,
    kind: 0,
    index: 0,
};

struct Table {
    entries: *mut Entry,
    /// A power of two, or 0 before the first insert.
    capacity: usize,
    len: usize,
}

// SAFETY: the entries are only reached under the mutex.
unsafe impl Send for Table {}

static TABLE: Mutex<Table> = Mutex::new(Table {
    entries: std::ptr::null_mut(),
    capacity: 0,
    len: 0,
});

/// Records an allocation; false when there was no room to record it (the
/// caller then gives the bytes back, and the free will change nothing).
pub(crate) fn insert(kind: Kind, key: u64, size: u64, index: usize) -> bool {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    if (table.len + 1) * 2 > table.capacity && !table.grow() {
        return false;
    }
    table.put(Entry {
        key,
        size,
        kind: kind as u32,
        index: index as u32,
    });
    true
}

/// Forgets an allocation: its size and GPU, when it was recorded.
pub(crate) fn remove(kind: Kind, key: u64) -> Option<(u64, usize)> {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    table.take(kind as u32, key)
}

fn hash(kind: u32, key: u64) -> usize {
    ((key ^ u64::from(kind)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as usize
}

impl Table {
    /// The entries, borrowed apart from the counters.
    fn slots<'a>(&self) -> &'a mut [Entry] {
        if self.capacity == 0 {
            return &mut [];
        }
        // SAFETY: `capacity` entries were mapped for us, and are only
        // reached under the mutex, by one borrow at a time.
        unsafe { std::slice::from_raw_parts_mut(self.entries, self.capacity) }
    }

    fn put(&mut self, entry: Entry) {
        let mask = self.capacity - 1;
        let mut i = hash(entry.kind, entry.key) & mask;
        let slots = self.slots();
        loop {
            let slot = &mut slots[i];
            if slot.kind == 0 || (slot.kind == entry.kind && slot.key == entry.key) {
                let new = slot.kind == 0;
                *slot = entry;
                if new {
                    self.len += 1;
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn take(&mut self, kind: u32, key: u64) -> Option<(u64, usize)> {
        if self.capacity == 0 {
            return None;
        }
        let mask = self.capacity - 1;
        let slots = self.slots();
        let mut i = hash(kind, key) & mask;
        loop {
            let slot = slots[i];
            if slot.kind == 0 {
                return None;
            }
            if slot.kind == kind && slot.key == key {
                break;
            }
            i = (i + 1) & mask;
        }
        let found = slots[i];
        // Backward-shift deletion: no tombstones, probes stay short.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let next = slots[j];
            if next.kind == 0 {
                break;
            }
            let home = hash(next.kind, next.key) & mask;
            // Move `next` into the hole unless its home lies cyclically in
            // (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                slots[hole] = next;
                hole = j;
            }
        }
        slots[hole] = EMPTY;
        self.len -= 1;
        Some((found.size, found.index as usize))
    }

    fn grow(&mut self) -> bool {
        let capacity = (self.capacity * 2).max(4096);
        let bytes = capacity * size_of::<Entry>();
        // SAFETY: a fresh anonymous map (zeroed, so every entry is empty).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return false;
        }
        let old = std::mem::replace(
            self,
            Table {
                entries: p.cast(),
                capacity,
                len: 0,
            },
        );
        if old.capacity > 0 {
            // SAFETY: the old table, read once and unmapped.
            let entries = unsafe { std::slice::from_raw_parts(old.entries, old.capacity) };
            for &e in entries.iter().filter(|e| e.kind != 0) {
                self.put(e);
            }
            // SAFETY: mapped by an earlier grow with this size.
            unsafe {
                libc::munmap(old.entries.cast(), old.capacity * size_of::<Entry>());
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_many() {
        for k in 1..20_000u64 {
            assert!(insert(Kind::Pointer, k * 512, k, (k % 3) as usize));
        }
        assert!(insert(Kind::Handle, 512, 7, 1));
        for k in (1..20_000u64).step_by(2) {
            assert_eq!(remove(Kind::Pointer, k * 512), Some((k, (k % 3) as usize)));
        }
        assert_eq!(remove(Kind::Pointer, 512), None);
        for k in (2..20_000u64).step_by(2) {
            assert_eq!(remove(Kind::Pointer, k * 512), Some((k, (k % 3) as usize)));
        }
        assert_eq!(remove(Kind::Handle, 512), Some((7, 1)));
        assert_eq!(remove(Kind::Handle, 512), None);
    }
}
