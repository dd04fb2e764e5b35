//! The report's pictures, and how the comparison binaries hand their numbers to it.
//!
//! A comparison binary run by the report (`compare`, `wal_compare`) prints its tables for
//! the page and, when `VQ_PLOT_DATA` names a directory, also writes the numbers behind
//! them there as small CSV files ([`emit`]); the report reads them back ([`load`]) and
//! draws line charts of them ([`lines`]) as SVG files.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// The environment variable naming the directory the comparison binaries write their
/// plot data into.
pub const PLOT_DATA: &str = "VQ_PLOT_DATA";

/// Writes `rows` (comma-separated fields each) under the `header` line into
/// `$VQ_PLOT_DATA/name.csv`; does nothing when the variable is not set.
///
/// # Panics
///
/// If the file cannot be written.
pub fn emit(name: &str, header: &str, rows: &[String]) {
    let Some(dir) = std::env::var_os(PLOT_DATA) else {
        return;
    };
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    let path = Path::new(&dir).join(format!("{name}.csv"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The rows of `dir/name.csv` written by [`emit`], header left out, each split on commas;
/// `None` if the file is missing (the binary did not run, or failed).
pub fn load(dir: &Path, name: &str) -> Option<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.csv"))).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect(),
    )
}

/// One line of a chart: its legend and its points.
pub struct Series {
    /// The legend.
    pub label: String,
    /// The points, in the order they are joined.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `label` through `points`.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
        }
    }
}

/// The axes of a chart: their descriptions and whether each is logarithmic.
pub struct Axes<'a> {
    /// The x axis' description.
    pub x: &'a str,
    /// The y axis' description.
    pub y: &'a str,
    /// A logarithmic x axis.
    pub log_x: bool,
    /// A logarithmic y axis.
    pub log_y: bool,
    /// Whether to mark every point with a dot.
    pub dots: bool,
}

const COLORS: [RGBColor; 8] = [
    BLUE,
    RED,
    RGBColor(0, 150, 0),
    MAGENTA,
    RGBColor(230, 140, 0),
    RGBColor(90, 90, 90),
    CYAN,
    RGBColor(140, 70, 20),
];

/// Draws `series` as lines into the SVG file `path`, titled `title`.
///
/// # Errors
///
/// If the file cannot be written, or there is nothing to draw.
pub fn lines(
    path: &Path,
    title: &str,
    axes: &Axes<'_>,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    if all().next().is_none() {
        return Err(format!("{title}: no data").into());
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for (x, y) in all() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    // Values from zero on the y axis (rates and sizes); the x axis spans its data.
    let span = |lo: f64, hi: f64, log: bool, from_zero: bool| {
        if log {
            let lo = lo.max(1e-9);
            (lo / 1.5, hi.max(lo) * 1.5)
        } else {
            let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-9);
            let lo = match (from_zero, lo >= 0.0) {
                (true, true) => 0.0,
                (false, true) => (lo - pad).max(0.0),
                (_, false) => lo - pad,
            };
            (lo, hi + 2.0 * pad)
        }
    };
    let (x0, x1) = span(x0, x1, axes.log_x, false);
    let (y0, y1) = span(y0, y1, axes.log_y, true);
    match (axes.log_x, axes.log_y) {
        (false, false) => draw(path, title, axes, series, x0..x1, y0..y1),
        (true, false) => draw(path, title, axes, series, (x0..x1).log_scale(), y0..y1),
        (false, true) => draw(path, title, axes, series, x0..x1, (y0..y1).log_scale()),
        (true, true) => draw(
            path,
            title,
            axes,
            series,
            (x0..x1).log_scale(),
            (y0..y1).log_scale(),
        ),
    }
}

fn draw<X, Y>(
    path: &Path,
    title: &str,
    axes: &Axes<'_>,
    series: &[Series],
    x: X,
    y: Y,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .draw()?;
    for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?
            .label(s.label.replace('`', ""))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        if axes.dots {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
