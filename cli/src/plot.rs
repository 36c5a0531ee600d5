//! `fulgur plot`: a run's `metrics.csv` as line charts, by step and by epoch, in SVG or PNG.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

/// A metric's points, `(x, value)`, by step and by epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// The metric names, in the file's column order (`epoch` and `step` excluded).
    pub names: Vec<String>,
    /// Per metric, the rows that have a value: `(step, value)`.
    pub by_step: Vec<Line>,
    /// Per metric, the mean of its values in each epoch (rows with an epoch): `(epoch, mean)`.
    pub by_epoch: Vec<Line>,
}

/// One metric's points, `(x, value)`.
pub type Line = Vec<(f64, f64)>;

/// What went wrong, for the command line to print.
pub type Error = String;

/// The `metrics.csv` of a run: `dir/metrics.csv`, or that of the newest `version_N` under `dir` or under
/// `dir/lightning_logs`.
pub fn find_metrics(dir: &Path) -> Result<PathBuf, Error> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    let direct = dir.join("metrics.csv");
    if direct.is_file() {
        return Ok(direct);
    }
    for base in [dir.to_path_buf(), dir.join("lightning_logs")] {
        let newest = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u64 = name.strip_prefix("version_")?.parse().ok()?;
                let csv = e.path().join("metrics.csv");
                csv.is_file().then_some((n, csv))
            })
            .max_by_key(|&(n, _)| n);
        if let Some((_, csv)) = newest {
            return Ok(csv);
        }
    }
    Err(format!(
        "no metrics.csv in `{0}`, nor in a `version_N` directory under it or under `{0}/lightning_logs` (the CSV logger writes one per run)",
        dir.display()
    ))
}

/// Reads a `metrics.csv` as the CSV logger writes it (Lightning's layout: `epoch`, `step`, then one
/// column per metric, empty where a row has no value). `only` keeps those metrics, in that order; an
/// unknown name is an error that lists the file's metrics.
pub fn read_curves(path: &Path, only: Option<&[String]>) -> Result<Curves, Error> {
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("`{}`: {e}", path.display()))?
        .iter()
        .map(str::to_string)
        .collect();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (epoch_col, step_col) = (column("epoch"), column("step"));
    let Some(step_col) = step_col else {
        return Err(format!(
            "`{}` has no `step` column: it is not a metrics.csv the CSV logger wrote (columns: {})",
            path.display(),
            headers.join(", ")
        ));
    };
    let available: Vec<(usize, &String)> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| *h != "epoch" && *h != "step")
        .collect();
    let chosen: Vec<(usize, String)> = match only {
        None => available.iter().map(|(i, h)| (*i, (*h).clone())).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                available
                    .iter()
                    .find(|(_, h)| *h == n)
                    .map(|(i, _)| (*i, n.clone()))
                    .ok_or_else(|| {
                        format!(
                            "`{}` has no metric `{n}`; its metrics are: {}",
                            path.display(),
                            available
                                .iter()
                                .map(|(_, h)| h.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut curves = Curves {
        names: chosen.iter().map(|(_, n)| n.clone()).collect(),
        by_step: vec![Vec::new(); chosen.len()],
        by_epoch: vec![Vec::new(); chosen.len()],
    };
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("`{}`: {e}", path.display()))?;
        let cell = |i: usize, name: &str| -> Result<Option<f64>, Error> {
            match record.get(i).map(str::trim) {
                None | Some("") => Ok(None),
                Some(text) => text.parse::<f64>().map(Some).map_err(|_| {
                    format!(
                        "`{}` line {}: column `{name}` holds `{text}`, not a number",
                        path.display(),
                        line + 2
                    )
                }),
            }
        };
        let step = cell(step_col, "step")?;
        let epoch = match epoch_col {
            Some(i) => cell(i, "epoch")?,
            None => None,
        };
        for (k, (i, name)) in chosen.iter().enumerate() {
            let Some(value) = cell(*i, name)?.filter(|v| v.is_finite()) else {
                continue;
            };
            if let Some(step) = step {
                curves.by_step[k].push((step, value));
            }
            if let Some(epoch) = epoch {
                curves.by_epoch[k].push((epoch, value));
            }
        }
    }
    // A metric logged at every step has several values per epoch: the chart by epoch shows their mean
    // (an epoch-level metric has one value per epoch, shown as it is).
    for line in &mut curves.by_epoch {
        let mut means: Vec<(f64, f64, usize)> = Vec::new();
        for &(epoch, value) in line.iter() {
            match means.iter_mut().find(|(e, _, _)| *e == epoch) {
                Some((_, sum, n)) => {
                    *sum += value;
                    *n += 1;
                }
                None => means.push((epoch, value, 1)),
            }
        }
        means.sort_by(|a, b| a.0.total_cmp(&b.0));
        *line = means
            .into_iter()
            .map(|(e, sum, n)| (e, sum / n as f64))
            .collect();
    }
    if curves.by_step.iter().all(Vec::is_empty) {
        return Err(format!("`{}` holds no values to plot", path.display()));
    }
    Ok(curves)
}

/// The fonts tried for text, in order, after the file named by `FULGUR_FONT`.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a TrueType font for the charts' text (once per process).
fn register_font() -> Result<(), Error> {
    static REGISTERED: std::sync::OnceLock<Result<(), Error>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let from_env = std::env::var_os("FULGUR_FONT").map(PathBuf::from);
            let candidates = from_env.iter().cloned().chain(FONTS.iter().map(PathBuf::from));
            for path in candidates {
                let Ok(bytes) = std::fs::read(&path) else { continue };
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
            Err(format!(
                "no TrueType font for the charts' text: set FULGUR_FONT to a .ttf file (looked for {})",
                FONTS.join(", ")
            ))
        })
        .clone()
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `curves` to `out`: an SVG or a PNG by its extension, one chart by step and, when the file has
/// epoch values, one by epoch below it. Returns the image's size in pixels.
pub fn plot(curves: &Curves, out: &Path, title: &str) -> Result<(u32, u32), Error> {
    let panels = 1 + usize::from(curves.by_epoch.iter().any(|c| !c.is_empty()));
    let size = (1000, 420 * panels as u32);
    register_font()?;
    let extension = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let drawn = match extension.as_deref() {
        Some("svg") => draw(
            SVGBackend::new(out, size).into_drawing_area(),
            curves,
            title,
        ),
        Some("png") => draw(
            BitMapBackend::new(out, size).into_drawing_area(),
            curves,
            title,
        ),
        _ => {
            return Err(format!(
                "`{}`: the output must end in `.svg` or `.png` (the extension chooses the format)",
                out.display()
            ))
        }
    };
    drawn.map_err(|e| format!("cannot draw `{}`: {e}", out.display()))?;
    Ok(size)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &Curves,
    title: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let mut panels: Vec<(&str, &[Line])> = vec![("step", curves.by_step.as_slice())];
    if curves.by_epoch.iter().any(|c| !c.is_empty()) {
        panels.push(("epoch", curves.by_epoch.as_slice()));
    }
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (axis, lines)) in areas.iter().zip(panels) {
        let points = || lines.iter().flatten();
        let bounds = |f: fn(&(f64, f64)) -> f64| {
            let (lo, hi) = points()
                .map(f)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            if lo >= hi {
                let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                (lo - pad, hi + pad)
            } else {
                let pad = (hi - lo) * 0.05;
                (lo - pad, hi + pad)
            }
        };
        let (x0, x1) = bounds(|p| p.0);
        let (y0, y1) = bounds(|p| p.1);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title} by {axis}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(axis)
            .y_desc("value")
            .draw()
            .map_err(err)?;
        for (i, (name, line)) in curves.names.iter().zip(lines.iter()).enumerate() {
            if line.is_empty() {
                continue;
            }
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_values_are_averaged_per_epoch_and_quoted_names_read() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("metrics.csv");
        std::fs::write(
            &csv,
            "epoch,step,\"val,loss\",train_loss\n0,1,,1.0\n0,2,,3.0\n0,2,0.5,\n1,3,,nan\n1,4,0.25,6.0\n",
        )
        .unwrap();
        let c = read_curves(&csv, None).unwrap();
        assert_eq!(c.names, ["val,loss", "train_loss"]);
        assert_eq!(
            c.by_step[1],
            [(1.0, 1.0), (2.0, 3.0), (4.0, 6.0)],
            "NaN left out"
        );
        assert_eq!(c.by_epoch[1], [(0.0, 2.0), (1.0, 6.0)]);
        assert_eq!(c.by_epoch[0], [(0.0, 0.5), (1.0, 0.25)]);
        let only = read_curves(&csv, Some(&["train_loss".to_string()])).unwrap();
        assert_eq!(only.names, ["train_loss"]);
        std::fs::write(&csv, "epoch,step,loss\n0,1,abc\n").unwrap();
        let err = read_curves(&csv, None).unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("`loss`") && err.contains("abc"),
            "{err}"
        );
    }
}
