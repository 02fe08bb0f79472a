//! Letterboxing a BGR frame into the model's input tensor, without allocating per frame.
//!
//! The frame is scaled (aspect kept) to fit the model input, placed top-left or centred, and the rest is
//! filled with the pad value. Scaling, channel reordering, normalisation and the HWC → CHW transpose happen in
//! one pass straight into the tensor's buffer: bilinear sampling with OpenCV's `INTER_LINEAR` conventions
//! (which YOLO-family models are trained with), taps computed once per geometry. When frames arrive already
//! scaled by the capture pipeline (the usual case) each pixel is a table lookup. The pad area is rewritten only
//! when the geometry changes.

use super::manifest::{ChannelOrder, InputSpec, Layout, Letterbox as LetterboxStyle};
use crate::capture::FrameView;

/// Where a frame landed in the model input, to map boxes back to source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Offset of the picture in the input.
    pub offset_x: f32,
    pub offset_y: f32,
    /// Input pixels → source pixels.
    pub scale_x: f32,
    pub scale_y: f32,
    pub source_width: u32,
    pub source_height: u32,
}

impl Letterbox {
    /// Maps a box in model-input pixels to source pixels, clamped to the picture.
    pub fn to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let (w, h) = (self.source_width as f32, self.source_height as f32);
        [
            ((b[0] - self.offset_x) * self.scale_x).clamp(0.0, w),
            ((b[1] - self.offset_y) * self.scale_y).clamp(0.0, h),
            ((b[2] - self.offset_x) * self.scale_x).clamp(0.0, w),
            ((b[3] - self.offset_y) * self.scale_y).clamp(0.0, h),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("frame buffer too small: {len} bytes for {width}x{height} with stride {stride}")]
    ShortFrame { len: usize, width: u32, height: u32, stride: usize },
}

/// One bilinear tap pair along an axis: source indices and the weight of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

/// Taps mapping `dst` output pixels onto `src` input pixels, OpenCV `INTER_LINEAR` style: pixel centres
/// aligned, edges clamped.
fn compute_taps(src: u32, dst: u32, taps: &mut Vec<Tap>) {
    taps.clear();
    let scale = src as f32 / dst as f32;
    let last = src as usize - 1;
    for d in 0..dst {
        let s = (d as f32 + 0.5) * scale - 0.5;
        let tap = if s <= 0.0 {
            Tap { i0: 0, i1: 0, w: 0.0 }
        } else {
            let i0 = s.floor() as usize;
            if i0 >= last { Tap { i0: last, i1: last, w: 0.0 } } else { Tap { i0, i1: i0 + 1, w: s - i0 as f32 } }
        };
        taps.push(tap);
    }
}

/// Reusable letterbox preprocessor for one model input.
pub struct Preprocessor {
    spec: InputSpec,
    /// Per model channel: normalised value `v × gain + bias` of a 0–255 value `v`.
    gain: [f32; 3],
    bias: [f32; 3],
    /// The same as tables, for frames that need no scaling.
    lut: [[f32; 256]; 3],
    /// For each model channel, the byte index within a BGR pixel.
    src_channel: [usize; 3],
    /// Bilinear taps (x as byte offsets of pixels) for the last (frame size, scaled size).
    x_taps: Vec<Tap>,
    y_taps: Vec<Tap>,
    taps_for: Option<(u32, u32, u32, u32)>,
    /// Geometry (x, y, w, h) of the picture in the last input written; the padding around it is valid.
    last_geometry: Option<(u32, u32, u32, u32)>,
}

impl Preprocessor {
    pub fn new(spec: &InputSpec) -> Self {
        let src_channel = match spec.channels {
            ChannelOrder::Bgr => [0, 1, 2],
            ChannelOrder::Rgb => [2, 1, 0],
        };
        let gain = [0, 1, 2].map(|c| spec.scale / spec.std[c]);
        let bias = [0, 1, 2].map(|c| -spec.mean[c] / spec.std[c]);
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = v as f32 * gain[c] + bias[c];
            }
        }
        Self { spec: spec.clone(), gain, bias, lut, src_channel, x_taps: Vec::new(), y_taps: Vec::new(), taps_for: None, last_geometry: None }
    }

    /// Number of f32 values in the input tensor.
    pub fn input_len(&self) -> usize {
        3 * self.spec.width as usize * self.spec.height as usize
    }

    /// Writes `frame` into `input` (length [`Self::input_len`]) and returns where it landed.
    pub fn run(&mut self, frame: &FrameView<'_>, input: &mut [f32]) -> Result<Letterbox, PreprocessError> {
        let (iw, ih) = (self.spec.width, self.spec.height);
        let (fw, fh) = (frame.width.max(1), frame.height.max(1));
        let row = fw as usize * 3;
        if frame.stride < row || frame.data.len() < frame.stride * (fh as usize - 1) + row {
            return Err(PreprocessError::ShortFrame { len: frame.data.len(), width: fw, height: fh, stride: frame.stride });
        }
        let r = (iw as f32 / fw as f32).min(ih as f32 / fh as f32);
        let nw = ((fw as f32 * r) as u32).clamp(1, iw);
        let nh = ((fh as f32 * r) as u32).clamp(1, ih);
        let (ox, oy) = match self.spec.letterbox {
            LetterboxStyle::TopLeft => (0, 0),
            LetterboxStyle::Center => ((iw - nw) / 2, (ih - nh) / 2),
        };
        let geometry = (ox, oy, nw, nh);
        if self.last_geometry != Some(geometry) {
            self.fill_padding(input);
            self.last_geometry = Some(geometry);
        }

        let out = Rows { input, layout: self.spec.layout, width: iw as usize, plane: iw as usize * ih as usize, x0: ox as usize, n: nw as usize };
        let (data, stride) = (frame.data, frame.stride);
        let [c0, c1, c2] = self.src_channel;
        if (nw, nh) == (fw, fh) {
            let [l0, l1, l2] = &self.lut;
            let mut out = out;
            for y in 0..nh as usize {
                let src = &data[y * stride..y * stride + row];
                out.write(oy as usize + y, |x| {
                    let px = &src[x * 3..x * 3 + 3];
                    [l0[px[c0] as usize], l1[px[c1] as usize], l2[px[c2] as usize]]
                });
            }
        } else {
            if self.taps_for != Some((fw, fh, nw, nh)) {
                compute_taps(fw, nw, &mut self.x_taps);
                compute_taps(fh, nh, &mut self.y_taps);
                for t in &mut self.x_taps {
                    // Byte offsets of the two pixels in a row.
                    t.i0 *= 3;
                    t.i1 *= 3;
                }
                self.taps_for = Some((fw, fh, nw, nh));
            }
            let (gain, bias, x_taps) = (self.gain, self.bias, &self.x_taps);
            let mut out = out;
            for (y, ty) in self.y_taps.iter().enumerate() {
                let (r0, r1) = (&data[ty.i0 * stride..ty.i0 * stride + row], &data[ty.i1 * stride..ty.i1 * stride + row]);
                let wy = ty.w;
                out.write(oy as usize + y, |x| {
                    let tx = x_taps[x];
                    let sample = |s: usize| {
                        let (a, b) = (r0[tx.i0 + s] as f32, r0[tx.i1 + s] as f32);
                        let (c, d) = (r1[tx.i0 + s] as f32, r1[tx.i1 + s] as f32);
                        let top = a + (b - a) * tx.w;
                        let bottom = c + (d - c) * tx.w;
                        top + (bottom - top) * wy
                    };
                    [sample(c0) * gain[0] + bias[0], sample(c1) * gain[1] + bias[1], sample(c2) * gain[2] + bias[2]]
                });
            }
        }
        Ok(Letterbox {
            offset_x: ox as f32,
            offset_y: oy as f32,
            scale_x: frame.source_width as f32 / nw as f32,
            scale_y: frame.source_height as f32 / nh as f32,
            source_width: frame.source_width,
            source_height: frame.source_height,
        })
    }

    fn fill_padding(&self, input: &mut [f32]) {
        let plane = self.spec.width as usize * self.spec.height as usize;
        let pad = self.spec.pad_value as usize;
        match self.spec.layout {
            Layout::Nchw => {
                for c in 0..3 {
                    input[c * plane..(c + 1) * plane].fill(self.lut[c][pad]);
                }
            }
            Layout::Nhwc => {
                for px in input.chunks_exact_mut(3) {
                    for (c, v) in px.iter_mut().enumerate() {
                        *v = self.lut[c][pad];
                    }
                }
            }
        }
    }
}

/// Writes rows of the picture into the tensor in its layout.
struct Rows<'a> {
    input: &'a mut [f32],
    layout: Layout,
    /// Tensor width and plane size.
    width: usize,
    plane: usize,
    /// First column and number of columns of the picture.
    x0: usize,
    n: usize,
}

impl Rows<'_> {
    /// Writes tensor row `y`: `pixel(x)` gives the model-order channel values of picture column `x`.
    #[inline(always)]
    fn write(&mut self, y: usize, pixel: impl Fn(usize) -> [f32; 3]) {
        let start = y * self.width + self.x0;
        match self.layout {
            Layout::Nchw => {
                let (p0, rest) = self.input.split_at_mut(self.plane);
                let (p1, p2) = rest.split_at_mut(self.plane);
                let (d0, d1, d2) = (&mut p0[start..start + self.n], &mut p1[start..start + self.n], &mut p2[start..start + self.n]);
                for x in 0..self.n {
                    let [a, b, c] = pixel(x);
                    d0[x] = a;
                    d1[x] = b;
                    d2[x] = c;
                }
            }
            Layout::Nhwc => {
                let dst = &mut self.input[start * 3..(start + self.n) * 3];
                for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                    d.copy_from_slice(&pixel(x));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layout: Layout, letterbox: LetterboxStyle, channels: ChannelOrder) -> InputSpec {
        InputSpec { name: "images".into(), width: 8, height: 8, layout, channels, scale: 1.0, mean: [0.0; 3], std: [1.0; 3], pad_value: 114, letterbox }
    }

    /// A 4x2 BGR frame whose pixel (x, y) is (10x+y, 100+x, 200+y).
    fn frame() -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..2u8 {
            for x in 0..4u8 {
                v.extend_from_slice(&[10 * x + y, 100 + x, 200 + y]);
            }
        }
        v
    }

    #[test]
    fn top_left_nchw_bgr_places_pixels_and_pads() {
        let data = frame();
        // 4x2 scaled into 8x8: r = 2 → 8x4 at (0,0). Use a frame already the right size to test placement.
        let mut big = Vec::new();
        for y in 0..4u32 {
            for x in 0..8u32 {
                big.extend_from_slice(&[(x + 10 * y) as u8, 1, 2]);
            }
        }
        let mut p = Preprocessor::new(&spec(Layout::Nchw, LetterboxStyle::TopLeft, ChannelOrder::Bgr));
        let mut input = vec![0f32; p.input_len()];
        let lb = p.run(&FrameView::packed(&big, 8, 4), &mut input).unwrap();
        assert_eq!((lb.offset_x, lb.offset_y), (0.0, 0.0));
        assert_eq!(input[3 * 8 + 5], 35.0, "B plane at (5,3)");
        assert_eq!(input[64 + 3 * 8 + 5], 1.0, "G plane");
        assert_eq!(input[128 + 3 * 8 + 5], 2.0, "R plane");
        assert_eq!(input[4 * 8], 114.0, "row 4 is padding");
        assert_eq!(input[128 + 7 * 8 + 7], 114.0);
        // Resizing path: the small frame is upscaled ×2 and still fills rows 0..4.
        let lb = p.run(&FrameView::packed(&data, 4, 2), &mut input).unwrap();
        assert_eq!((lb.scale_x, lb.scale_y), (0.5, 0.5));
        assert_eq!(input[4 * 8], 114.0);
        assert!(input[64] >= 100.0 && input[64] <= 103.0, "G of first pixel {}", input[64]);
    }

    #[test]
    fn center_nhwc_rgb_swaps_channels_and_offsets() {
        let mut big = Vec::new();
        for _ in 0..4 {
            for _ in 0..8 {
                big.extend_from_slice(&[1, 2, 3]);
            }
        }
        let mut p = Preprocessor::new(&spec(Layout::Nhwc, LetterboxStyle::Center, ChannelOrder::Rgb));
        let mut input = vec![0f32; p.input_len()];
        let lb = p.run(&FrameView::packed(&big, 8, 4), &mut input).unwrap();
        assert_eq!(lb.offset_y, 2.0);
        assert_eq!(&input[0..3], &[114.0, 114.0, 114.0]);
        let at = (2 * 8) * 3;
        assert_eq!(&input[at..at + 3], &[3.0, 2.0, 1.0], "RGB order");
    }

    #[test]
    fn normalisation_and_box_mapping() {
        let mut s = spec(Layout::Nchw, LetterboxStyle::TopLeft, ChannelOrder::Bgr);
        s.scale = 1.0 / 255.0;
        s.mean = [0.5; 3];
        s.std = [0.5; 3];
        let mut p = Preprocessor::new(&s);
        let px = vec![255u8; 8 * 8 * 3];
        let mut input = vec![0f32; p.input_len()];
        let mut view = FrameView::packed(&px, 8, 8);
        view.source_width = 32;
        view.source_height = 32;
        let lb = p.run(&view, &mut input).unwrap();
        assert!((input[0] - 1.0).abs() < 1e-6);
        assert_eq!(lb.to_source([1.0, 2.0, 4.0, 8.0]), [4.0, 8.0, 16.0, 32.0]);
        assert_eq!(lb.to_source([-5.0, 0.0, 100.0, 1.0]), [0.0, 0.0, 32.0, 4.0], "clamped");
    }

    #[test]
    fn taps_follow_opencv_inter_linear() {
        let mut t = Vec::new();
        compute_taps(8, 4, &mut t);
        // Output pixel d samples source position (d + 0.5) × 2 − 0.5.
        assert_eq!(t, vec![Tap { i0: 0, i1: 1, w: 0.5 }, Tap { i0: 2, i1: 3, w: 0.5 }, Tap { i0: 4, i1: 5, w: 0.5 }, Tap { i0: 6, i1: 7, w: 0.5 }]);
        compute_taps(2, 4, &mut t);
        // Upscaling clamps at the edges.
        assert_eq!(t[0], Tap { i0: 0, i1: 0, w: 0.0 });
        assert_eq!(t[1], Tap { i0: 0, i1: 1, w: 0.25 });
        assert_eq!(t[3], Tap { i0: 1, i1: 1, w: 0.0 });
    }

    #[test]
    fn downscaling_interpolates_a_gradient_exactly() {
        // B = 4x, G = 2y, R = 7: bilinear sampling of a linear ramp is exact away from the edges.
        let (w, h) = (16u32, 8u32);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(4 * x) as u8, (2 * y) as u8, 7]);
            }
        }
        let mut p = Preprocessor::new(&spec(Layout::Nchw, LetterboxStyle::TopLeft, ChannelOrder::Bgr));
        let mut input = vec![0f32; p.input_len()];
        let lb = p.run(&FrameView::packed(&data, w, h), &mut input).unwrap();
        assert_eq!((lb.scale_x, lb.scale_y), (2.0, 2.0), "16x8 fits 8x8 as 8x4");
        for y in 0..4 {
            for x in 0..8 {
                let (sx, sy) = (x as f32 * 2.0 + 0.5, y as f32 * 2.0 + 0.5);
                assert!((input[y * 8 + x] - 4.0 * sx).abs() < 1e-4, "B at ({x},{y}): {}", input[y * 8 + x]);
                assert!((input[64 + y * 8 + x] - 2.0 * sy).abs() < 1e-4, "G at ({x},{y})");
                assert_eq!(input[128 + y * 8 + x], 7.0);
            }
        }
        assert_eq!(input[4 * 8], 114.0, "padding below the picture");
    }

    #[test]
    fn strided_frames_are_read_row_by_row() {
        // 2x1 frame with a stride of 8 bytes (2 bytes of row padding), needing an upscale to 8 wide.
        let data = [10u8, 20, 30, 10, 20, 30, 0, 0];
        let view = FrameView { data: &data, width: 2, height: 1, stride: 8, source_width: 2, source_height: 1 };
        let mut p = Preprocessor::new(&spec(Layout::Nchw, LetterboxStyle::TopLeft, ChannelOrder::Bgr));
        let mut input = vec![0f32; p.input_len()];
        p.run(&view, &mut input).unwrap();
        assert_eq!(input[0], 10.0);
        assert_eq!(input[64], 20.0);
    }
}
