//! The throughput-against-latency plot: one series per report, one point per in-flight level
//! (x: throughput, y: p99 latency), labelled with its level, as SVG so it needs no fonts or
//! image codecs and diffs as text.

use crate::stats::Report;
use plotters::prelude::*;
use std::path::Path;

/// Plot size in pixels.
pub const PLOT_WIDTH_PX: u32 = 900;
pub const PLOT_HEIGHT_PX: u32 = 560;

/// Draws every report's levels into one SVG at `path`.
pub fn write_plot(path: &Path, reports: &[&Report]) -> anyhow::Result<()> {
    let points = |r: &Report| -> Vec<(f64, f64, usize)> {
        r.results
            .iter()
            .map(|l| (l.throughput_ops_s, l.latency.p99_ms, l.in_flight))
            .collect()
    };
    let all: Vec<(f64, f64, usize)> = reports.iter().flat_map(|r| points(r)).collect();
    anyhow::ensure!(!all.is_empty(), "nothing to plot: no results");
    // Headroom above the largest value so the top point's label stays inside the chart.
    let x_max = all.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.15;
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.15;
    let workloads: Vec<&str> = reports.iter().map(|r| r.workload.as_str()).collect();
    let mut title = format!("{}: throughput vs p99 latency", workloads.join(", "));
    if let Some(r) = reports.first() {
        title.push_str(&format!(
            " ({} B keys, {} B values)",
            r.key_size, r.value_size
        ));
    }

    let root = SVGBackend::new(path, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("throughput (ops/s)")
            .y_desc("p99 latency (ms)")
            .draw()?;
        for (i, report) in reports.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts = points(report);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))?
                .label(format!("{} ({})", report.label, report.workload))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
            )?;
            chart.draw_series(pts.iter().map(|p| {
                Text::new(
                    format!("  {} in flight", p.2),
                    (p.0, p.1),
                    ("sans-serif", 12),
                )
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw the plot {}: {e}", path.display()))
}
