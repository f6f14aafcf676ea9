//! SVG plots for the HTML report, drawn with plotters' SVG backend (no font libraries): the
//! latency percentile spectrum overlaid per target, a per-round line chart, and grouped bars.

use plotters::prelude::*;

use crate::hist::Hist;

/// Plot size in pixels.
const SIZE: (u32, u32) = (860, 420);

/// Colours for targets, in order.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The colour of target `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A named line of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

type PlotResult = Result<String, String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Percentile → "nines" (`log10(1 / (1 - q))`): p90 = 1, p99 = 2, p99.9 = 3.
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-9)).log10()
}

/// Points of a latency percentile spectrum: x in nines, y in µs.
pub fn spectrum_points(h: &Hist) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_x = nines_cap(h.len());
    let mut pts: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, v)| (nines(q).min(max_x), h.highest_equivalent(v) as f64 / 1000.0))
        .collect();
    pts.push((max_x, h.max() as f64 / 1000.0));
    pts
}

/// How far right a spectrum can honestly go for `count` samples (at most p99.999).
fn nines_cap(count: u64) -> f64 {
    (count.max(10) as f64).log10().clamp(1.0, 5.0)
}

/// Latency percentile spectrum, one line per target, log latency axis.
pub fn spectrum(title: &str, series: &[Series]) -> PlotResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let all = series.iter().flat_map(|s| s.points.iter());
        let (mut lo, mut hi, mut xmax) = (f64::INFINITY, 0f64, 1f64);
        for &(x, y) in all {
            lo = lo.min(y);
            hi = hi.max(y);
            xmax = xmax.max(x);
        }
        if !lo.is_finite() {
            lo = 1.0;
            hi = 10.0;
        }
        let lo = (lo * 0.8).max(0.1);
        let hi = (hi * 1.25).max(lo * 10.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax.ceil(), (lo..hi).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency")
            .x_labels(xmax.ceil() as usize + 1)
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p0".to_string(),
                1 => "p90".to_string(),
                2 => "p99".to_string(),
                3 => "p99.9".to_string(),
                4 => "p99.99".to_string(),
                5 => "p99.999".to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| super::fmt_us(*y))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A line chart with points, x = round number.
pub fn per_round(title: &str, y_desc: &str, series: &[Series]) -> PlotResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let rounds = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1f64, f64::max);
        let hi = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.5f64..rounds + 0.5, 0f64..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("round")
            .y_desc(y_desc)
            .x_labels(rounds as usize + 2)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && *x >= 1.0 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| super::fmt_count(*y))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A time series: one line per series over seconds since the start, y from 0.
pub fn per_second(title: &str, y_desc: &str, series: &[Series]) -> PlotResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let pts = || series.iter().flat_map(|s| s.points.iter());
        let xmax = pts().map(|p| p.0).fold(1f64, f64::max);
        let hi = pts().map(|p| p.1).fold(0f64, f64::max).max(1e-9) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..xmax, 0f64..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the start")
            .y_desc(y_desc)
            .y_label_formatter(&|y| super::fmt_count(*y))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Bars spanning more than this factor (largest over smallest) get a log axis, so that a
/// slow target (gunicorn's ~150 µs/request) does not flatten the others into slivers.
const BARS_LOG_SPAN: f64 = 20.0;

/// Grouped bars: for each target, one bar per measure (`measures` names them; `None` = absent).
/// The y axis is linear from 0, or logarithmic when the values span more than
/// [`BARS_LOG_SPAN`]× (the caption says so).
pub fn bars(
    title: &str,
    y_desc: &str,
    targets: &[String],
    measures: &[&str],
    values: &[Vec<Option<f64>>],
) -> PlotResult {
    let positive = || {
        values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .filter(|v| *v > 0.0)
    };
    let max = positive().fold(0f64, f64::max).max(1e-9);
    let min = positive().fold(f64::INFINITY, f64::min).min(max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = targets.len().max(1) as f64;
        let builder = |caption: String| {
            let mut b = ChartBuilder::on(&root);
            b.caption(caption, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70);
            b
        };
        if max / min > BARS_LOG_SPAN {
            // One decade of headroom below the smallest bar, so it stays visible.
            let (lo, hi) = (min / 10.0, max * 2.0);
            let chart = builder(format!("{title} (log scale)"))
                .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
                .map_err(err)?;
            draw_bars(chart, lo, y_desc, targets, measures, values)?;
        } else {
            let chart = builder(title.to_string())
                .build_cartesian_2d(0f64..n, 0f64..max * 1.2)
                .map_err(err)?;
            draw_bars(chart, 0.0, y_desc, targets, measures, values)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The body of [`bars`] for either y axis; bars rise from `base`.
fn draw_bars<'a, Y>(
    mut chart: ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    base: f64,
    y_desc: &str,
    targets: &[String],
    measures: &[&str],
    values: &[Vec<Option<f64>>],
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let n = targets.len().max(1);
    let names = targets.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let k = x - 0.5;
            if (k - k.round()).abs() < 1e-6 && k >= 0.0 {
                names.get(k.round() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| super::fmt_us(*y))
        .draw()
        .map_err(err)?;
    let m = measures.len().max(1) as f64;
    let width = 0.8 / m;
    for (j, measure) in measures.iter().enumerate() {
        let shade = if j == 0 {
            color(0)
        } else {
            RGBColor(150, 150, 150)
        };
        let rects: Vec<_> = values
            .iter()
            .enumerate()
            .filter_map(|(i, vals)| {
                let v = (*vals.get(j)?)?;
                let x0 = i as f64 + 0.1 + j as f64 * width;
                let c = if j == 0 { color(i) } else { shade };
                Some(Rectangle::new(
                    [(x0, base), (x0 + width * 0.9, v.max(base))],
                    c.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(*measure)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], shade.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::{new_hist, record};

    #[test]
    fn spectrum_renders_svg_with_every_target() {
        let mut a = new_hist();
        let mut b = new_hist();
        for i in 1..5000u64 {
            record(&mut a, i * 1000);
            record(&mut b, i * 2000);
        }
        let series = vec![
            Series {
                name: "alpha".into(),
                points: spectrum_points(&a),
            },
            Series {
                name: "beta".into(),
                points: spectrum_points(&b),
            },
        ];
        let svg = spectrum("latency", &series).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("alpha") && svg.contains("beta"));
        assert!(svg.contains("p99.9"));
        let bars_svg = bars(
            "cpu",
            "µs",
            &["alpha".into(), "beta".into()],
            &["server", "loadgen"],
            &[vec![Some(3.0), Some(1.0)], vec![None, Some(2.0)]],
        )
        .unwrap();
        assert!(bars_svg.contains("<rect"));
        assert!(!bars_svg.contains("log scale"));
        // 150 against 3: a log axis, said in the caption.
        let wide = bars(
            "cpu",
            "µs",
            &["fast".into(), "slow".into()],
            &["server"],
            &[vec![Some(3.0)], vec![Some(150.0)]],
        )
        .unwrap();
        assert!(wide.contains("cpu (log scale)"));
        assert!(wide.contains("<rect"));
        let line = per_round("rps", "req/s", &series).unwrap();
        assert!(line.contains("<circle"));
    }
}
