//! Availability of a chaos run: successful operations per 100 ms per member over time, and the
//! downtime of each fault — from the fault's start until the first success of an operation
//! *called* after it, cluster-wide (and per member) — written as `availability.json` and drawn
//! as `availability.svg` (one line per member, faults shaded on the time axis) — and each
//! member's **heal time**: from the fault's end (links restored, member continued or restarted)
//! until that member next answered one of its clients successfully.

use crate::workload::Success;
use plotters::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Width of one availability bucket.
pub const BUCKET_MS: u64 = 100;
const CHART_WIDTH_PX: u32 = 1400;
const CHART_HEIGHT_PX: u32 = 560;

/// A fault as it really happened (times in µs of the run's clock).
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub id: usize,
    pub kind: &'static str,
    pub shape: &'static str,
    /// What was done, with roles resolved ("crash n2 (leader)").
    pub description: String,
    pub start_us: u64,
    /// When the fault's final shape took effect, from which its downtime is measured: the start,
    /// except for a constrained election, whose leader is cut off only after the lag phase.
    pub effective_us: u64,
    pub end_us: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FaultDowntime {
    pub id: usize,
    pub kind: &'static str,
    pub shape: &'static str,
    pub description: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// Start of the fault (its final shape) to the first success (of an op called after the start) anywhere;
    /// `None` if there was none until the end of the run.
    pub downtime_ms: Option<f64>,
    /// The same per member (index order), for the members whose clients lost service.
    pub node_downtime_ms: Vec<Option<f64>>,
    /// Per member: the fault's end to the first success returned to that member's clients
    /// after it (≈ 0 for a member that kept serving); `None` if none until the end of the run.
    pub node_heal_ms: Vec<Option<f64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub faults: usize,
    pub mean_downtime_ms: f64,
    pub max_downtime_ms: f64,
    /// Faults after which nothing succeeded until the end of the run.
    pub never_recovered: usize,
    /// The longest heal time of any member after a fault of this kind.
    pub max_heal_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Availability {
    pub bucket_ms: u64,
    pub nodes: Vec<String>,
    /// `ops_per_bucket[node][i]` = successes returned in `[i*bucket_ms, (i+1)*bucket_ms)`.
    pub ops_per_bucket: Vec<Vec<u32>>,
    pub faults: Vec<FaultDowntime>,
    pub by_kind: BTreeMap<String, KindSummary>,
}

/// Computes availability for `nodes` members over a run of `run_us`.
pub fn compute(
    nodes: &[String],
    successes: &[Success],
    faults: &[FaultRecord],
    run_us: u64,
) -> Availability {
    let buckets = (run_us / 1000 / BUCKET_MS + 1) as usize;
    let mut ops = vec![vec![0u32; buckets]; nodes.len()];
    for s in successes {
        let b = ((s.return_us / 1000 / BUCKET_MS) as usize).min(buckets - 1);
        if let Some(row) = ops.get_mut(s.node) {
            row[b] += 1;
        }
    }
    let first_after = |start: u64, node: Option<usize>| -> Option<f64> {
        successes
            .iter()
            .filter(|s| s.call_us >= start && node.is_none_or(|n| s.node == n))
            .map(|s| s.return_us)
            .min()
            .map(|r| (r - start) as f64 / 1000.0)
    };
    let first_return_after = |end: u64, node: usize| -> Option<f64> {
        successes
            .iter()
            .filter(|s| s.return_us >= end && s.node == node)
            .map(|s| s.return_us)
            .min()
            .map(|r| (r - end) as f64 / 1000.0)
    };
    let fd: Vec<FaultDowntime> = faults
        .iter()
        .map(|f| FaultDowntime {
            id: f.id,
            kind: f.kind,
            shape: f.shape,
            description: f.description.clone(),
            start_ms: f.start_us as f64 / 1000.0,
            end_ms: f.end_us as f64 / 1000.0,
            downtime_ms: first_after(f.effective_us, None),
            node_downtime_ms: (0..nodes.len())
                .map(|n| first_after(f.effective_us, Some(n)))
                .collect(),
            node_heal_ms: (0..nodes.len())
                .map(|n| first_return_after(f.end_us, n))
                .collect(),
        })
        .collect();
    let mut by_kind: BTreeMap<String, KindSummary> = BTreeMap::new();
    for f in &fd {
        let e = by_kind.entry(f.kind.to_string()).or_insert(KindSummary {
            faults: 0,
            mean_downtime_ms: 0.0,
            max_downtime_ms: 0.0,
            never_recovered: 0,
            max_heal_ms: 0.0,
        });
        e.faults += 1;
        e.max_heal_ms = f
            .max_heal_ms()
            .map_or(e.max_heal_ms, |h| e.max_heal_ms.max(h));
        match f.downtime_ms {
            Some(d) => {
                e.mean_downtime_ms += d;
                e.max_downtime_ms = e.max_downtime_ms.max(d);
            }
            None => e.never_recovered += 1,
        }
    }
    for e in by_kind.values_mut() {
        let n = e.faults - e.never_recovered;
        if n > 0 {
            e.mean_downtime_ms /= n as f64;
        }
    }
    Availability {
        bucket_ms: BUCKET_MS,
        nodes: nodes.to_vec(),
        ops_per_bucket: ops,
        faults: fd,
        by_kind,
    }
}

impl FaultDowntime {
    /// The slowest member's heal time (`None` if some member never answered again).
    pub fn max_heal_ms(&self) -> Option<f64> {
        self.node_heal_ms
            .iter()
            .try_fold(0.0f64, |m, h| h.map(|h| m.max(h)))
    }
}

impl Availability {
    /// One line per fault kind, for the terminal report.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (kind, k) in &self.by_kind {
            s.push_str(&format!(
                "  {kind:<10} {} fault(s): downtime mean {:.0} ms, max {:.0} ms; heal max {:.0} ms{}\n",
                k.faults,
                k.mean_downtime_ms,
                k.max_downtime_ms,
                k.max_heal_ms,
                if k.never_recovered > 0 {
                    format!(", {} never recovered", k.never_recovered)
                } else {
                    String::new()
                }
            ));
        }
        s
    }
}

fn kind_color(kind: &str) -> RGBColor {
    match kind {
        "crash" => RGBColor(230, 80, 80),
        "pause" => RGBColor(240, 170, 40),
        "partition" => RGBColor(70, 130, 220),
        _ => RGBColor(150, 90, 200),
    }
}

const NODE_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// Draws the chart: x = seconds since the start, y = successful operations per bucket, one line
/// per member; each fault is a shaded band in its kind's colour, labelled `#id shape`.
pub fn draw_svg(a: &Availability, title: &str, path: &Path) -> Result<(), String> {
    draw(a, title, path).map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

fn draw(a: &Availability, title: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (CHART_WIDTH_PX, CHART_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let buckets = a.ops_per_bucket.first().map_or(1, Vec::len);
    let x_max = buckets as f64 * a.bucket_ms as f64 / 1000.0;
    let y_max = a
        .ops_per_bucket
        .iter()
        .flat_map(|r| r.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(format!("successful ops per {} ms", a.bucket_ms))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for kind in ["crash", "pause", "partition", "partial"] {
        let faults: Vec<&FaultDowntime> = a.faults.iter().filter(|f| f.kind == kind).collect();
        if faults.is_empty() {
            continue;
        }
        let color = kind_color(kind);
        chart
            .draw_series(faults.iter().map(|f| {
                Rectangle::new(
                    [(f.start_ms / 1000.0, 0.0), (f.end_ms / 1000.0, y_max)],
                    color.mix(0.18).filled(),
                )
            }))?
            .label(format!("fault: {kind}"))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.mix(0.35).filled())
            });
        chart.draw_series(faults.iter().map(|f| {
            Text::new(
                format!("#{} {}", f.id, f.shape),
                (f.start_ms / 1000.0, y_max * 0.98),
                ("sans-serif", 11).into_font().color(&color),
            )
        }))?;
    }
    for (i, (name, row)) in a.nodes.iter().zip(&a.ops_per_bucket).enumerate() {
        let color = NODE_COLORS[i % NODE_COLORS.len()];
        let step = a.bucket_ms as f64 / 1000.0;
        chart
            .draw_series(LineSeries::new(
                row.iter()
                    .enumerate()
                    .map(|(b, &n)| (b as f64 * step, f64::from(n))),
                color.stroke_width(1),
            ))?
            .label(format!("{name} (its clients)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_downtime() {
        let s = |node, call_ms: u64, ret_ms: u64| Success {
            node,
            call_us: call_ms * 1000,
            return_us: ret_ms * 1000,
        };
        let successes = vec![
            s(0, 0, 10),
            s(1, 50, 120),
            s(0, 1000, 1900),
            s(1, 1500, 2500),
        ];
        let faults = vec![FaultRecord {
            id: 1,
            kind: "crash",
            shape: "crash",
            description: "crash n1".into(),
            start_us: 900_000,
            effective_us: 900_000,
            end_us: 2_000_000,
        }];
        let a = compute(&["n1".into(), "n2".into()], &successes, &faults, 3_000_000);
        assert_eq!(a.ops_per_bucket[0][0], 1);
        assert_eq!(a.ops_per_bucket[1][1], 1);
        assert_eq!(a.ops_per_bucket[0][19], 1);
        assert_eq!(a.faults[0].downtime_ms, Some(1000.0));
        assert_eq!(
            a.faults[0].node_downtime_ms,
            vec![Some(1000.0), Some(1600.0)]
        );
        // Heal: from the fault's end (2 s) to each member's next success returned after it.
        assert_eq!(a.faults[0].node_heal_ms, vec![None, Some(500.0)]);
        assert_eq!(a.faults[0].max_heal_ms(), None, "n1 never answered again");
        assert_eq!(a.by_kind["crash"].faults, 1);
        let dir = std::env::temp_dir().join(format!("synod-chaos-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.svg");
        draw_svg(&a, "test", &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("#1 crash") && svg.contains("n2 (its clients)")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
