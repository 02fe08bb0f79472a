//! Allocator settings for a service that runs for years (glibc only; elsewhere nothing to do).
//!
//! Measured under the adversarial soak (`bench/soak_attack.sh`): every large, short-lived buffer — a 16 MiB
//! bundle head read by an install thread, a megabyte command parsed — stayed in the process after it was
//! freed, and RSS climbed in 17 MB steps. Two glibc behaviours combine there: the mmap threshold grows to
//! the size of the largest freed mapping (so later big buffers come from the heap and are kept), and each new
//! thread (every install and model trial runs on its own) may get an arena of its own, which keeps what it
//! once held. A fixed threshold sends every large buffer to its own mapping, returned to the kernel when
//! freed, and a small arena cap bounds how many heaps can each keep a high-water mark.
//!
//! The threshold is glibc's own starting value, 128 KiB, held fixed. It was 1 MiB, which cost memory twice
//! over (`bench/service_vs_python.sh`, four 720p cameras): zero-filled allocations between the two sizes
//! (sled's 42 statistics histograms of 512 KiB each, never written to) came from the heap, where calloc must
//! clear them, instead of fresh mappings the kernel leaves unbacked — 21 MB of RSS for nothing; and nothing in
//! the per-frame path allocates that much any more (decoded pictures live in GStreamer's pools, ONNX Runtime's
//! tensors in its arena), so the lower threshold costs no page faults there. RSS went from 242 to 188 MB.

/// Buffers at least this large are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 128 << 10;
/// Heaps at most (glibc's default is 8 per core).
const ARENA_MAX: i32 = 4;

/// Applies the settings above; call once at start, before other threads exist.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}
