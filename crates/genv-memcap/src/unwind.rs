//! The frame lookup of the unwinder linked into the library (build.rs).
//!
//! GCC's static unwinder finds a frame's unwinding tables with glibc's
//! `_dl_find_object`, which is new in glibc 2.35, where the rest of the
//! library needs 2.34 at most (the images of RHEL 9 and its rebuilds have
//! 2.34). Nothing unwinds in this library: a panic aborts at the first
//! `extern "C"` frame anyway. So the lookup is this one, which finds
//! nothing, and a panic aborts where it is raised; the unwinder's own
//! lookup (and its use of `_dl_find_object`) is never linked. The symbol
//! is hidden: the process's own unwinder (libgcc_s, for C++ exceptions
//! and backtraces) never sees it.

#[cfg(all(
    not(test),
    target_os = "linux",
    target_env = "gnu",
    target_arch = "x86_64"
))]
std::arch::global_asm!(
    ".pushsection .text._Unwind_Find_FDE,\"ax\",%progbits",
    ".globl _Unwind_Find_FDE",
    ".hidden _Unwind_Find_FDE",
    ".type _Unwind_Find_FDE, %function",
    "_Unwind_Find_FDE:",
    "xor eax, eax",
    "ret",
    ".size _Unwind_Find_FDE, . - _Unwind_Find_FDE",
    ".popsection",
);

#[cfg(all(
    not(test),
    target_os = "linux",
    target_env = "gnu",
    target_arch = "aarch64"
))]
std::arch::global_asm!(
    ".pushsection .text._Unwind_Find_FDE,\"ax\",%progbits",
    ".globl _Unwind_Find_FDE",
    ".hidden _Unwind_Find_FDE",
    ".type _Unwind_Find_FDE, %function",
    "_Unwind_Find_FDE:",
    "mov x0, xzr",
    "ret",
    ".size _Unwind_Find_FDE, . - _Unwind_Find_FDE",
    ".popsection",
);
