//! The static version of a map, for papers: a scatter plot with one series (colour and legend entry) per label,
//! through the display layer (SVG, PNG, inline in a notebook).

use crate::display::figure::Plot;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// A scatter of the 2-D points, one series per distinct label in order of first appearance.
/// # Shapes
/// `xy [n, 2]`, `labels` n entries (empty: one unlabelled series).
pub fn scatter_plot(title: &str, xy: &Tensor, labels: &[String]) -> Result<Plot> {
    let n = match xy.size().as_slice() {
        [n, 2] => *n as usize,
        s => return Err(Error::Shape { context: "map plot".into(), why: format!("expected xy [n, 2], got {s:?}") }),
    };
    if !labels.is_empty() && labels.len() != n {
        return Err(Error::invalid(format!("{} labels", labels.len()), format!("need one per point ({n})")));
    }
    let values = Vec::<f64>::try_from(xy.f_to_kind(Kind::Double)?.f_flatten(0, -1)?)?;
    let mut order: Vec<&str> = Vec::new();
    let mut series: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for (i, point) in values.chunks_exact(2).enumerate() {
        let label = labels.get(i).map(String::as_str).unwrap_or("points");
        let at = match order.iter().position(|l| *l == label) {
            Some(at) => at,
            None => {
                order.push(label);
                series.push((Vec::new(), Vec::new()));
                order.len() - 1
            }
        };
        series[at].0.push(point[0]);
        series[at].1.push(point[1]);
    }
    let plot =
        order.iter().zip(&series).fold(Plot::scatter(title), |plot, (label, (xs, ys))| plot.series(*label, xs, ys));
    Ok(plot.size(520, 420))
}
