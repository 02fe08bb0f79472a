//! Letterboxing a BGR frame into the model's input tensor, without allocating per frame.
//!
//! The frame is scaled (aspect kept) to fit the model input, placed top-left or centred, and the rest is
//! filled with the pad value. Pixels are normalised through a 256-entry lookup table per channel, and written
//! straight into the tensor's buffer (NCHW or NHWC). When frames arrive already scaled by the capture
//! pipeline (the usual case) the resize step is skipped and this is a single pass over the pixels. The pad
//! area is only rewritten when the geometry changes.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

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
    /// The input the picture was written into (the model's size, or smaller with rectangular inference).
    pub input_width: u32,
    pub input_height: u32,
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
    #[error("resize failed: {0}")]
    Resize(String),
    #[error("input buffer too small: {len} values for a {width}x{height} input")]
    ShortInput { len: usize, width: u32, height: u32 },
}

/// Reusable letterbox preprocessor for one model input.
pub struct Preprocessor {
    spec: InputSpec,
    /// Normalised value of each 0–255 pixel value, per input channel (already in the model's order).
    lut: [[f32; 256]; 3],
    /// For each model channel, the byte index within a BGR pixel.
    src_channel: [usize; 3],
    resizer: Resizer,
    scaled: Vec<u8>,
    packed: Vec<u8>,
    /// Rectangular inference: input sides are the picture's rounded up to this multiple.
    multiple: Option<u32>,
    /// Geometry of the last input written; the padding around the picture is valid while it holds.
    last_geometry: Option<Geometry>,
}

/// Where a frame goes in the input: the input's size, the picture's offset and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    iw: u32,
    ih: u32,
    ox: u32,
    oy: u32,
    nw: u32,
    nh: u32,
}

impl Preprocessor {
    pub fn new(spec: &InputSpec) -> Self {
        let src_channel = match spec.channels {
            ChannelOrder::Bgr => [0, 1, 2],
            ChannelOrder::Rgb => [2, 1, 0],
        };
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Self { spec: spec.clone(), lut, src_channel, resizer: Resizer::new(), scaled: Vec::new(), packed: Vec::new(), multiple: None, last_geometry: None }
    }

    /// Rectangular inference: each frame goes into the smallest input that holds its scaled picture, sides
    /// rounded up to `multiple` (the model's largest stride), instead of the model's full size.
    pub fn rectangular(mut self, multiple: Option<u32>) -> Self {
        self.multiple = multiple.filter(|m| *m > 0);
        self
    }

    /// Number of f32 values in the model's full-size input tensor.
    pub fn input_len(&self) -> usize {
        3 * self.spec.width as usize * self.spec.height as usize
    }

    /// The input size (width, height) [`Self::run`] writes `frame` into.
    pub fn input_size(&self, frame: &FrameView<'_>) -> (u32, u32) {
        let g = self.geometry(frame.width.max(1), frame.height.max(1));
        (g.iw, g.ih)
    }

    fn geometry(&self, fw: u32, fh: u32) -> Geometry {
        let (w, h) = (self.spec.width, self.spec.height);
        let r = (w as f32 / fw as f32).min(h as f32 / fh as f32);
        let nw = ((fw as f32 * r) as u32).clamp(1, w);
        let nh = ((fh as f32 * r) as u32).clamp(1, h);
        let (iw, ih) = match self.multiple {
            Some(m) => (nw.div_ceil(m).saturating_mul(m).min(w), nh.div_ceil(m).saturating_mul(m).min(h)),
            None => (w, h),
        };
        let (ox, oy) = match self.spec.letterbox {
            LetterboxStyle::TopLeft => (0, 0),
            LetterboxStyle::Center => ((iw - nw) / 2, (ih - nh) / 2),
        };
        Geometry { iw, ih, ox, oy, nw, nh }
    }

    /// Writes `frame` into `input` (3 × the width × height of [`Self::input_size`] values) and returns where
    /// it landed.
    pub fn run(&mut self, frame: &FrameView<'_>, input: &mut [f32]) -> Result<Letterbox, PreprocessError> {
        let (fw, fh) = (frame.width.max(1), frame.height.max(1));
        let row = fw as usize * 3;
        if frame.stride < row || frame.data.len() < frame.stride * (fh as usize - 1) + row {
            return Err(PreprocessError::ShortFrame { len: frame.data.len(), width: fw, height: fh, stride: frame.stride });
        }
        let geometry = self.geometry(fw, fh);
        let Geometry { iw, ih, ox, oy, nw, nh } = geometry;
        if input.len() < 3 * iw as usize * ih as usize {
            return Err(PreprocessError::ShortInput { len: input.len(), width: iw, height: ih });
        }
        let input = &mut input[..3 * iw as usize * ih as usize];

        // The picture to copy: the frame itself when it already has the target size, else a resized copy.
        let (pixels, stride): (&[u8], usize) = if (nw, nh) == (fw, fh) {
            (frame.data, frame.stride)
        } else {
            let src: &[u8] = if frame.stride == row {
                frame.data
            } else {
                self.packed.clear();
                for y in 0..fh as usize {
                    self.packed.extend_from_slice(&frame.data[y * frame.stride..y * frame.stride + row]);
                }
                &self.packed
            };
            self.scaled.resize(nw as usize * nh as usize * 3, 0);
            let src = ImageRef::new(fw, fh, src, PixelType::U8x3).map_err(|e| PreprocessError::Resize(e.to_string()))?;
            let mut dst = Image::from_slice_u8(nw, nh, &mut self.scaled, PixelType::U8x3).map_err(|e| PreprocessError::Resize(e.to_string()))?;
            self.resizer
                .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Interpolation(FilterType::Bilinear)))
                .map_err(|e| PreprocessError::Resize(e.to_string()))?;
            (&self.scaled, nw as usize * 3)
        };

        if self.last_geometry != Some(geometry) {
            self.fill_padding(input);
            self.last_geometry = Some(geometry);
        }
        let (iw_us, plane) = (iw as usize, iw as usize * ih as usize);
        match self.spec.layout {
            Layout::Nchw => {
                let (p0, rest) = input.split_at_mut(plane);
                let (p1, p2) = rest.split_at_mut(plane);
                let [c0, c1, c2] = self.src_channel;
                let [l0, l1, l2] = &self.lut;
                for y in 0..nh as usize {
                    let src = &pixels[y * stride..y * stride + nw as usize * 3];
                    let start = (oy as usize + y) * iw_us + ox as usize;
                    let (d0, d1, d2) = (&mut p0[start..start + nw as usize], &mut p1[start..start + nw as usize], &mut p2[start..start + nw as usize]);
                    for (x, px) in src.chunks_exact(3).enumerate() {
                        d0[x] = l0[px[c0] as usize];
                        d1[x] = l1[px[c1] as usize];
                        d2[x] = l2[px[c2] as usize];
                    }
                }
            }
            Layout::Nhwc => {
                for y in 0..nh as usize {
                    let src = &pixels[y * stride..y * stride + nw as usize * 3];
                    let start = ((oy as usize + y) * iw_us + ox as usize) * 3;
                    let dst = &mut input[start..start + nw as usize * 3];
                    for (d, px) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                        for (c, v) in d.iter_mut().enumerate() {
                            *v = self.lut[c][px[self.src_channel[c]] as usize];
                        }
                    }
                }
            }
        }
        Ok(Letterbox {
            offset_x: ox as f32,
            offset_y: oy as f32,
            scale_x: frame.source_width as f32 / nw as f32,
            scale_y: frame.source_height as f32 / nh as f32,
            source_width: frame.source_width,
            source_height: frame.source_height,
            input_width: iw,
            input_height: ih,
        })
    }

    /// Fills `input` (one whole input of the current geometry) with the pad value.
    fn fill_padding(&self, input: &mut [f32]) {
        let plane = input.len() / 3;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layout: Layout, letterbox: LetterboxStyle, channels: ChannelOrder) -> InputSpec {
        InputSpec {
            name: "images".into(),
            width: 8,
            height: 8,
            layout,
            channels,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad_value: 114,
            letterbox,
            rectangular: false,
        }
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
    fn a_rectangular_input_holds_the_picture_rounded_up_to_the_stride() {
        let mut s = spec(Layout::Nchw, LetterboxStyle::TopLeft, ChannelOrder::Bgr);
        (s.width, s.height) = (416, 416);
        let mut p = Preprocessor::new(&s).rectangular(Some(32));
        // A 16:9 frame already scaled by capture: 416x234 goes into 416x256, not 416x416.
        let px: Vec<u8> = (0..416 * 234 * 3).map(|i| (i % 251) as u8).collect();
        let view = FrameView::packed(&px, 416, 234);
        assert_eq!(p.input_size(&view), (416, 256));
        let mut input = vec![-1f32; 3 * 416 * 256];
        let lb = p.run(&view, &mut input).unwrap();
        assert_eq!((lb.input_width, lb.input_height, lb.scale_x, lb.scale_y), (416, 256, 1.0, 1.0));
        let plane = 416 * 256;
        assert_eq!(input[233 * 416 + 415], px[(233 * 416 + 415) * 3] as f32, "last picture row, B plane");
        assert!(input[234 * 416..plane].iter().all(|v| *v == 114.0), "22 rows of padding below");
        assert!(input[2 * plane + 234 * 416..].iter().all(|v| *v == 114.0), "in every plane");
        assert!(matches!(p.run(&view, &mut vec![0f32; 3 * 416 * 200]), Err(PreprocessError::ShortInput { .. })));
        // Portrait 232x416 → 256x416; a square frame fills the whole input; without the option, the square.
        assert_eq!(p.input_size(&FrameView::packed(&px[..232 * 416 * 3], 232, 416)), (256, 416));
        assert_eq!(p.input_size(&FrameView::packed(&px[..64 * 64 * 3], 64, 64)), (416, 416));
        assert_eq!(Preprocessor::new(&s).input_size(&view), (416, 416));
        // Centred letterboxes centre within the smaller input.
        s.letterbox = LetterboxStyle::Center;
        let mut c = Preprocessor::new(&s).rectangular(Some(32));
        let lb = c.run(&view, &mut input).unwrap();
        assert_eq!((lb.offset_x, lb.offset_y), (0.0, 11.0));
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
