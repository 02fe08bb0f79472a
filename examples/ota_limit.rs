//! The limit an OTA installer can reach on this machine (`bench/ota_install.sh` times it next to
//! `perch ota install`): the bundle read once, each byte hashed once with SHA-256 (the `sha2` crate perch
//! uses, with the CPU's SHA instructions where it has them), written to the slot file with the same
//! writeback as perch's install — 1 MiB writes from a second thread with 4 chunks in flight,
//! `sync_file_range(SYNC_FILE_RANGE_WRITE)` every 8 MiB so the disk works while the next bytes are
//! hashed, one fsync at the end — and nothing else: no signature, no manifest, no per-chunk check, no state.
//!
//! ```sh
//! cargo build --release --example ota_limit
//! target/release/examples/ota_limit BUNDLE SLOT    # prints the SHA-256 of BUNDLE
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

use perch::ota::bundle::{DEFAULT_CHUNK, read_full};
use perch::ota::install::{BUFFERS, WRITEBACK_STEP};
use perch::util::fs::hex;
use sha2::{Digest, Sha256};

/// perch's bundle chunk: the limit reads and writes in the same units as the install.
const CHUNK: usize = DEFAULT_CHUNK as usize;

fn write_loop(mut f: File, rx: mpsc::Receiver<Vec<u8>>, back: mpsc::Sender<Vec<u8>>) -> std::io::Result<()> {
    let (mut pos, mut kicked) = (0u64, 0u64);
    for buf in rx {
        f.write_all(&buf)?;
        pos += buf.len() as u64;
        if pos - kicked >= WRITEBACK_STEP {
            // SAFETY: a valid open descriptor; the call only schedules writeback of a range.
            unsafe { libc::sync_file_range(f.as_raw_fd(), kicked as i64, (pos - kicked) as i64, libc::SYNC_FILE_RANGE_WRITE) };
            kicked = pos;
        }
        let _ = back.send(buf);
    }
    f.sync_all()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bundle, slot] = &args[..] else {
        eprintln!("usage: ota_limit BUNDLE SLOT");
        std::process::exit(2);
    };
    let mut input = File::open(bundle)?;
    let out = File::create(slot)?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    let (back_tx, back_rx) = mpsc::channel();
    let writer = std::thread::spawn(move || write_loop(out, rx, back_tx));
    let mut hash = Sha256::new();
    let mut spare = (0..=BUFFERS).map(|_| vec![0u8; CHUNK]).collect::<Vec<_>>();
    loop {
        let mut buf = spare.pop().or_else(|| back_rx.recv().ok()).expect("the writer returns its buffers");
        buf.resize(CHUNK, 0);
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hash.update(&buf);
        if tx.send(buf).is_err() {
            break; // the writer failed: its error is below
        }
    }
    drop(tx);
    writer.join().expect("writer thread")?;
    println!("{}", hex(&hash.finalize()));
    Ok(())
}
