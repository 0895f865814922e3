//! Reading the memory cap's ledgers (`memcap-<uid>-<environment>`, written
//! by `libgenv_memcap.so`, crates/genv-memcap/src/ledger.rs): what each
//! environment's live processes hold on each GPU, as the cap counts it.
//! genv only reads them, for `genv status`, `genv devices ps --format json`
//! and the `nvidia-smi` shim.
//!
//! The layout is the library's own ([`crate::memcap::layout`]): a header,
//! then slots of (owner pid, start time, per-GPU byte counts),
//! native-endian `u64`s. A ledger is trusted only when it is
//! a regular file, reached without a link, owned by the user its name
//! says, private to them and of the exact size: another user cannot make
//! genv show numbers for an environment that is not theirs.

use std::collections::BTreeMap;
use std::io::Read;

use rustix::fs::{Mode, OFlags};

use super::Dir;
use crate::memcap::layout::{
    HEADER_WORDS, HIGH_WORD, MAGIC, MAX_DEVICES, OWNER_WORD, RECLAIMING, SIZE, SLOT_WORDS, SLOTS,
    START_WORD, USED_WORD,
};

/// Bytes held per GPU index by an environment's live processes.
pub(crate) type Usage = BTreeMap<u32, u64>;

/// What an environment's live processes hold, per GPU, by its ledger;
/// `None` when there is no ledger that can be trusted (no process of the
/// environment ever ran under the library, or the file is not the
/// user's own).
pub(crate) fn usage(dir: &Dir, uid: u32, eid: &str) -> Option<Usage> {
    let name = crate::memcap::ledger_name(uid, eid);
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir.fd(), name.as_str(), flags, Mode::empty()).ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    let regular = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
    if !regular
        || stat.st_uid != uid
        || stat.st_mode & 0o077 != 0
        || stat.st_nlink != 1
        || stat.st_size != SIZE as i64
    {
        return None;
    }
    let mut bytes = Vec::with_capacity(SIZE);
    std::fs::File::from(fd).read_to_end(&mut bytes).ok()?;
    parse(&bytes, &mut |pid, start| {
        crate::os::procs::pid_alive(i64::from(pid))
            && (start == 0 || crate::os::procs::start_time(pid) == Some(start))
    })
}

/// The per-GPU sums of the slots whose owner `alive` says lives.
fn parse(bytes: &[u8], alive: &mut impl FnMut(u32, u64) -> bool) -> Option<Usage> {
    if bytes.len() != SIZE {
        return None;
    }
    let word = |i: usize| {
        let b: [u8; 8] = bytes[8 * i..8 * i + 8].try_into().unwrap_or_default();
        u64::from_ne_bytes(b)
    };
    if word(0) != MAGIC {
        return None;
    }
    let high = usize::try_from(word(HIGH_WORD)).unwrap_or(SLOTS).min(SLOTS);
    let mut usage = Usage::new();
    for slot in 0..high {
        let base = HEADER_WORDS + slot * SLOT_WORDS;
        let owner = word(base + OWNER_WORD);
        // Free, or being taken back by another process.
        if owner == 0 || owner & RECLAIMING != 0 {
            continue;
        }
        let Ok(pid) = u32::try_from(owner) else {
            continue;
        };
        if !alive(pid, word(base + START_WORD)) {
            continue;
        }
        for index in 0..MAX_DEVICES {
            let used = word(base + USED_WORD + index);
            if used != 0 {
                let total = usage.entry(index as u32).or_default();
                *total = total.saturating_add(used);
            }
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot: owner, start time, and bytes on GPU indices.
    type Slot<'a> = (u64, u64, &'a [(usize, u64)]);

    fn ledger(slots: &[Slot<'_>]) -> Vec<u8> {
        let mut words = vec![0u64; SIZE / 8];
        words[0] = MAGIC;
        words[HIGH_WORD] = slots.len() as u64;
        for (i, (owner, start, used)) in slots.iter().enumerate() {
            let base = HEADER_WORDS + i * SLOT_WORDS;
            words[base + OWNER_WORD] = *owner;
            words[base + START_WORD] = *start;
            for &(index, bytes) in *used {
                words[base + USED_WORD + index] = bytes;
            }
        }
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn live_slots_are_summed_per_gpu() {
        let bytes = ledger(&[
            (100, 7, &[(0, 1 << 20), (3, 5)]),
            (200, 9, &[(0, 2 << 20)]),
            (300, 1, &[(0, 1 << 30)]),
            (RECLAIMING | 400, 0, &[(0, 1)]),
            (0, 0, &[]),
        ]);
        let usage = parse(&bytes, &mut |pid, _| pid != 300).unwrap();
        assert_eq!(usage, Usage::from([(0, 3 << 20), (3, 5)]));
    }

    #[test]
    fn other_files_are_not_ledgers() {
        assert!(parse(&[0; 16], &mut |_, _| true).is_none());
        let mut bytes = ledger(&[]);
        bytes[0] ^= 1;
        assert!(parse(&bytes, &mut |_, _| true).is_none());
    }
}
