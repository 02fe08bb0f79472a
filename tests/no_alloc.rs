//! The per-frame hot path — letterbox preprocessing, output decoding and NMS — allocates nothing once its
//! buffers have grown to their working size. Checked with a counting global allocator on this thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use perch::capture::FrameView;
use perch::detect::ModelManifest;
use perch::detect::decode::{decode_yolox, nms};
use perch::detect::preprocess::Preprocessor;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn frame(w: u32, h: u32, salt: u32) -> Vec<u8> {
    (0..w * h * 3).map(|i| (i.wrapping_mul(2654435761).wrapping_add(salt) >> 24) as u8).collect()
}

#[test]
fn preprocessing_reuses_its_buffers() {
    let manifest = ModelManifest::load(&common::model()).unwrap();
    let mut pre = Preprocessor::new(&manifest.input);
    let mut input = vec![0f32; pre.input_len()];
    // Frames as the capture pipeline delivers them: already scaled to fit the model input, so letterboxing
    // is a table lookup per pixel. (Frames of another size take a resize through fast_image_resize, which
    // computes its coefficient tables on every call; that path serves `perch bench` and unusual detect sizes.)
    for (w, h) in [(416, 234), (416, 312), (232, 416)] {
        let frames: Vec<Vec<u8>> = (0..4).map(|s| frame(w, h, s)).collect();
        pre.run(&FrameView::packed(&frames[0], w, h), &mut input).unwrap();
        let n = allocations(|| {
            for f in &frames {
                pre.run(&FrameView::packed(f, w, h), &mut input).unwrap();
            }
        });
        assert_eq!(n, 0, "{w}x{h} frames: {n} allocations in 4 frames");
    }
    // Rectangular inference: each frame goes into the smallest input that holds it, in the same buffer.
    let mut pre = Preprocessor::new(&manifest.input).rectangular(Some(32));
    for (w, h) in [(416, 234), (232, 416)] {
        let frames: Vec<Vec<u8>> = (0..4).map(|s| frame(w, h, s)).collect();
        pre.run(&FrameView::packed(&frames[0], w, h), &mut input).unwrap();
        let n = allocations(|| {
            for f in &frames {
                pre.run(&FrameView::packed(f, w, h), &mut input).unwrap();
            }
        });
        assert_eq!(n, 0, "{w}x{h} frames, rectangular: {n} allocations in 4 frames");
    }
}

#[test]
fn decoding_and_nms_reuse_their_buffers() {
    // A YOLOX-shaped output with a few hundred confident anchors, different each frame.
    let outputs: Vec<Vec<f32>> = (0..4)
        .map(|k| {
            let mut out = vec![0f32; 3549 * 85];
            for (i, row) in out.chunks_exact_mut(85).enumerate() {
                if (i + k) % 11 == 0 {
                    row[2] = 0.5;
                    row[3] = 0.5;
                    row[4] = 0.9;
                    row[5 + (i % 80)] = 0.8;
                }
            }
            out
        })
        .collect();
    let mut cands = Vec::with_capacity(4096);
    let mut scratch = Vec::with_capacity(4096);
    let mut run = |out: &[f32], cands: &mut Vec<_>| {
        cands.clear();
        decode_yolox(out, &[1, 3549, 85], (416, 416), &[8, 16, 32], 80, 0.3, cands).unwrap();
        assert!(cands.len() > 300);
        nms(cands, 0.45, 100, &mut scratch);
        assert!(!cands.is_empty());
    };
    run(&outputs[0], &mut cands);
    let n = allocations(|| {
        for out in &outputs {
            run(out, &mut cands);
        }
    });
    assert_eq!(n, 0, "{n} allocations decoding 4 frames");
}
