//! When a process started, as `/proc/<pid>/stat` says: the start time a
//! ledger slot records beside its pid, so that a reused pid is not taken
//! for the process that held the slot. The library reads it for its own
//! slots (`ledger.rs`); genv includes this file in `src/os/procs.rs`, so
//! the two read it the same way. A function on bytes only: no dependency,
//! no allocation.

/// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot. The command
/// name (field 2) may hold spaces and parentheses: the fields after it
/// start after the last `)`.
pub(crate) fn start_time_of_stat(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat
        .get(close + 1..)?
        .split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty());
    // After `)` come field 3 (state), 4, ...: field 22 is the 20th.
    let field = fields.nth(19)?;
    field.iter().try_fold(0u64, |n, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}
