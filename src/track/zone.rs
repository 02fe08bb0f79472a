//! Point-in-polygon for zones and masks, and line crossings (normalised coordinates).

use super::config::Direction;

/// Which side of the line `a`→`b` the point `p` is on: negative on the left (standing at `a`, looking at
/// `b`, in picture coordinates with y down), positive on the right, zero on it.
fn side(a: [f32; 2], b: [f32; 2], p: [f32; 2]) -> f32 {
    (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
}

/// Whether moving from `p` to `q` crosses the segment `a`–`b`, and to which side. A point exactly on the
/// line counts as on its right, so a walk that pauses on the line crosses once, not zero or two times.
pub fn crossing(a: [f32; 2], b: [f32; 2], p: [f32; 2], q: [f32; 2]) -> Option<Direction> {
    let left = |x: f32| x < 0.0;
    let (from, to) = (left(side(a, b, p)), left(side(a, b, q)));
    let (d3, d4) = (side(p, q, a), side(p, q, b));
    (from != to && d3 * d4 <= 0.0).then_some(if to { Direction::Left } else { Direction::Right })
}

/// Whether `p` lies inside `polygon` (even-odd rule; points on an edge may go either way).
pub fn contains(polygon: &[[f32; 2]], p: [f32; 2]) -> bool {
    let mut inside = false;
    let n = polygon.len();
    if n < 3 {
        return false;
    }
    let mut j = n - 1;
    for i in 0..n {
        let ([xi, yi], [xj, yj]) = (polygon[i], polygon[j]);
        if (yi > p[1]) != (yj > p[1]) && p[0] < (xj - xi) * (p[1] - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossings_and_their_direction() {
        // A line drawn from the bottom of the picture to the top: moving leftwards crosses to its left.
        let (a, b) = ([0.5, 1.0], [0.5, 0.0]);
        assert_eq!(crossing(a, b, [0.7, 0.5], [0.3, 0.5]), Some(Direction::Left));
        assert_eq!(crossing(a, b, [0.3, 0.5], [0.7, 0.6]), Some(Direction::Right));
        assert_eq!(crossing(a, b, [0.3, 0.5], [0.4, 0.5]), None, "same side");
        // Onto the line is to its right; leaving it rightwards then crosses nothing more.
        assert_eq!(crossing(a, b, [0.3, 0.5], [0.5, 0.5]), Some(Direction::Right));
        assert_eq!(crossing(a, b, [0.5, 0.5], [0.7, 0.5]), None);
        // Past the segment's end is not a crossing.
        let (a, b) = ([0.5, 1.0], [0.5, 0.6]);
        assert_eq!(crossing(a, b, [0.3, 0.2], [0.7, 0.2]), None);
    }

    #[test]
    fn square_and_concave_polygons() {
        let square = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]];
        assert!(contains(&square, [0.5, 0.5]));
        assert!(!contains(&square, [0.1, 0.5]));
        assert!(!contains(&square, [0.5, 0.9]));
        // An L shape: the notch is outside.
        let l = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]];
        assert!(contains(&l, [0.25, 0.25]));
        assert!(!contains(&l, [0.75, 0.25]));
        assert!(contains(&l, [0.75, 0.75]));
        assert!(!contains(&[[0.0, 0.0], [1.0, 1.0]], [0.5, 0.5]));
    }
}
