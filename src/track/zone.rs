//! Point-in-polygon for zones and masks (normalised coordinates).

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
