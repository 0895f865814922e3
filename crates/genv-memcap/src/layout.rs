//! The memory cap ledger as stored: its name in the state folder and its
//! binary layout. The library writes it (`ledger.rs`); genv reads it
//! (`src/state/memcap_ledger.rs`), and includes this file as
//! `genv::memcap::layout`, so the two cannot disagree. Plain constants and
//! functions on bytes only: no dependency, no allocation.
//!
//! A ledger is [`SIZE`] bytes of native-endian `u64` words: a header of
//! [`HEADER_WORDS`] (magic, the high-water slot, reserved words), then
//! [`SLOTS`] slots of [`SLOT_WORDS`] (the owner's pid, its start time,
//! then the bytes it holds on each of [`MAX_DEVICES`] GPU indices).

/// The header's first word.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"GENVMCP1");
/// Words of the header: [`MAGIC`], the high-water slot (slots at or above
/// it have never been used), six reserved.
pub(crate) const HEADER_WORDS: usize = 8;
/// The header's word holding the high-water slot.
pub(crate) const HIGH_WORD: usize = 1;
/// Slots, one per process of the environment.
pub(crate) const SLOTS: usize = 512;
/// GPU indices the ledger keeps apart; higher ones share the last entry.
pub(crate) const MAX_DEVICES: usize = 32;
/// Words of a slot: owner, start time, then one per GPU index.
pub(crate) const SLOT_WORDS: usize = USED_WORD + MAX_DEVICES;
/// A slot's word holding its owner: 0 when free, else the pid, or
/// [`RECLAIMING`] | the pid of the process taking a dead owner's slot back.
pub(crate) const OWNER_WORD: usize = 0;
/// A slot's word holding the owner's start time (field 22 of
/// `/proc/<pid>/stat`), to tell a reused pid from the owner; 0 while the
/// slot is being claimed.
pub(crate) const START_WORD: usize = 1;
/// A slot's first per-GPU word.
pub(crate) const USED_WORD: usize = 2;
/// Set in a slot's owner while some process takes a dead slot back.
pub(crate) const RECLAIMING: u64 = 1 << 63;
/// The file's size in bytes.
pub(crate) const SIZE: usize = 8 * (HEADER_WORDS + SLOTS * SLOT_WORDS);

/// The file name's prefix: `memcap-<uid>-<environment>`.
pub(crate) const NAME_PREFIX: &str = "memcap-";

/// Whether an environment identifier goes into the file name as it is:
/// one plain path component of at most 64 bytes of `[A-Za-z0-9._-]`.
/// Any other is named by [`name_hash`], after an `h`.
pub(crate) fn name_is_plain(eid: &[u8]) -> bool {
    eid.len() <= 64
        && eid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
        && eid != b"."
        && eid != b".."
}

/// The FNV-1a hash that names an identifier that is not plain.
pub(crate) fn name_hash(eid: &[u8]) -> u64 {
    eid.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
