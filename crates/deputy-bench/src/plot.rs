//! SVG line plots of the scaling sweeps (`deputy-bench scaling --plots DIR`),
//! drawn with `plotters`' SVG backend alone (no font or bitmap features: the
//! text is left to the SVG viewer).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One line of a plot: a label and its points `(x, y)`.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A plot with a logarithmic x axis and a linear or logarithmic y axis.
pub struct Plot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if log { (lo / 1.5, hi * 1.5) } else { (0.0, if hi > 0.0 { hi * 1.15 } else { 1.0 }) }
}

/// Writes the plot to `path` as SVG.
pub fn write_svg(path: &Path, plot: &Plot) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (x_lo, x_hi) = range(plot.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), true);
    let (y_lo, y_hi) = range(plot.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), plot.log_y);
    let mut builder = ChartBuilder::on(&root);
    builder.caption(plot.title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(72);
    let fmt = |v: &f64| short(*v);
    if plot.log_y {
        let mut chart = builder
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(plot.x_label)
            .y_desc(plot.y_label)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .draw()
            .map_err(|e| err(&e))?;
        draw_series(&mut chart, &plot.series).map_err(|e| err(&e))?;
    } else {
        let mut chart =
            builder.build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi).map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(plot.x_label)
            .y_desc(plot.y_label)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .draw()
            .map_err(|e| err(&e))?;
        draw_series(&mut chart, &plot.series).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn draw_series<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    Ok(())
}

/// `1.5k`, `2M`, `0.25`: axis labels that fit.
fn short(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled.fract().abs() < 1e-9 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels() {
        assert_eq!(short(1500.0), "1.50k");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(64.0), "64");
    }

    #[test]
    fn writes_an_svg_with_the_title_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let plot = Plot {
            title: "a title",
            x_label: "items",
            y_label: "ms",
            log_y: true,
            series: vec![
                Series { label: "deputy".into(), points: vec![(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)] },
                Series { label: "floor".into(), points: vec![(1.0, 1.0), (10.0, 10.0), (100.0, 100.0)] },
            ],
        };
        write_svg(&path, &plot).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in ["a title", "items", "deputy", "floor"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
