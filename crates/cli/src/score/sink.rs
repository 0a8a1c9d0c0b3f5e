//! Where score rows go: CSV, JSON Lines or Parquet, chosen by the output's extension.
//!
//! CSV and JSON Lines are written as rows finish and flushed often, so an interrupted run
//! keeps its work and `--resume` continues it (a half-written last line is dropped first).
//! Parquet is columnar and written once at the end (to a temporary file, then renamed), so it
//! cannot be resumed.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

/// One scored image (or film).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The input as named on the command line or in the manifest.
    pub path: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// The decided label; empty when the image failed.
    pub label: Option<String>,
    /// Confidence of the decision.
    pub confidence: Option<f32>,
    /// Probabilities in label order; empty when the image failed.
    pub probabilities: Vec<f32>,
    /// Why a human should look (`review`), empty when none applies.
    pub flags: Vec<String>,
    /// Why the image could not be scored; empty when it was.
    pub error: Option<String>,
    /// The expected label, from the input manifest.
    pub expected: Option<String>,
    /// How many tiles were scored (1 unless the bundle tiles whole radiographs).
    pub tiles: u32,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header; one `p_<label>` column per label.
    Csv,
    /// One JSON object per line; probabilities as an object keyed by label.
    JsonLines,
    /// Apache Parquet; one `p_<label>` column per label.
    Parquet,
}

impl Format {
    /// The format an output path asks for.
    pub fn from_path(path: &Path) -> anyhow::Result<Format> {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".csv") {
            Ok(Format::Csv)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            Ok(Format::JsonLines)
        } else if name.ends_with(".parquet") {
            Ok(Format::Parquet)
        } else {
            crate::exit::fail(
                vigil_core::ErrorKind::Invalid,
                format!(
                    "{}: choose the format by extension: .csv, .jsonl or .parquet",
                    path.display()
                ),
            )
        }
    }
}

/// Writes rows.
pub trait Sink {
    /// Writes one row.
    fn write(&mut self, row: &Row) -> anyhow::Result<()>;
    /// Flushes and closes the output.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// How to open the output.
#[derive(Debug, Clone, Copy)]
pub struct OpenMode {
    /// Continue an earlier run: keep its rows, skip their inputs.
    pub resume: bool,
    /// Replace an existing output.
    pub overwrite: bool,
}

/// Opens the output; with `resume`, also returns the inputs it already holds.
pub fn open(
    path: &Path,
    labels: &[String],
    mode: OpenMode,
) -> anyhow::Result<(Box<dyn Sink>, HashSet<String>)> {
    let format = Format::from_path(path)?;
    let exists = path.exists();
    if exists && !mode.resume && !mode.overwrite {
        return crate::exit::fail(
            vigil_core::ErrorKind::Conflict,
            format!(
                "{} exists: pass --resume to continue it or --overwrite to replace it",
                path.display()
            ),
        );
    }
    let resume = exists && mode.resume;
    match format {
        Format::Parquet if resume => crate::exit::fail(
            vigil_core::ErrorKind::Invalid,
            "--resume works with .csv and .jsonl outputs, not Parquet",
        ),
        Format::Parquet => Ok((Box::new(ParquetSink::new(path, labels)), HashSet::new())),
        Format::Csv => {
            let header = csv_header(labels);
            let done = if resume {
                resume_csv(path, &header)?
            } else {
                HashSet::new()
            };
            let file = if resume { append(path)? } else { create(path)? };
            let mut writer = csv::Writer::from_writer(file);
            if !resume {
                writer.write_record(&header)?;
            }
            Ok((
                Box::new(CsvSink {
                    writer,
                    labels: labels.len(),
                    rows: 0,
                }),
                done,
            ))
        }
        Format::JsonLines => {
            let done = if resume {
                resume_jsonl(path)?
            } else {
                HashSet::new()
            };
            let file = if resume { append(path)? } else { create(path)? };
            Ok((
                Box::new(JsonSink {
                    out: BufWriter::new(file),
                    labels: labels.to_vec(),
                    rows: 0,
                }),
                done,
            ))
        }
    }
}

fn create(path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// Cuts a half-written last line (a run killed mid-write) so appending starts clean.
fn drop_partial_line(path: &Path) -> anyhow::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        f.set_len(keep as u64)?;
        f.seek(SeekFrom::End(0))?;
    }
    Ok(())
}

/// Rows whose input must be scored again: failures are retried on resume.
fn retry(error: &str) -> bool {
    !error.is_empty()
}

fn resume_csv(path: &Path, header: &[String]) -> anyhow::Result<HashSet<String>> {
    drop_partial_line(path)?;
    let mut reader = csv::Reader::from_path(path)?;
    let found: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    if found != header {
        return crate::exit::fail(
            vigil_core::ErrorKind::Conflict,
            format!(
                "{} was written with other columns (another model or labels?); use a new output \
                 or --overwrite",
                path.display()
            ),
        );
    }
    let error_col = header
        .iter()
        .position(|h| h == "error")
        .expect("the header has an error column");
    let mut done = HashSet::new();
    for record in reader.records() {
        let record = record?;
        if !retry(record.get(error_col).unwrap_or("")) {
            done.insert(record.get(0).unwrap_or("").to_owned());
        }
    }
    Ok(done)
}

fn resume_jsonl(path: &Path) -> anyhow::Result<HashSet<String>> {
    drop_partial_line(path)?;
    let text = std::fs::read_to_string(path)?;
    let mut done = HashSet::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {} is not JSON", path.display(), i + 1))?;
        let error = v["error"].as_str().unwrap_or("");
        if let Some(p) = v["path"].as_str().filter(|_| !retry(error)) {
            done.insert(p.to_owned());
        }
    }
    Ok(done)
}

fn csv_header(labels: &[String]) -> Vec<String> {
    let mut h: Vec<String> = ["path", "model", "version", "label", "confidence"]
        .map(String::from)
        .to_vec();
    h.extend(labels.iter().map(|l| format!("p_{l}")));
    h.extend(["flags", "error", "expected", "tiles"].map(String::from));
    h
}

/// Rows between flushes: a killed run loses at most this many finished rows.
const FLUSH_EVERY: usize = 64;

struct CsvSink {
    writer: csv::Writer<File>,
    labels: usize,
    rows: usize,
}

impl Sink for CsvSink {
    fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        let mut rec = vec![
            row.path.clone(),
            row.model.clone(),
            row.version.clone(),
            row.label.clone().unwrap_or_default(),
            row.confidence.map(|c| c.to_string()).unwrap_or_default(),
        ];
        for i in 0..self.labels {
            rec.push(
                row.probabilities
                    .get(i)
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            );
        }
        rec.push(row.flags.join(";"));
        rec.push(row.error.clone().unwrap_or_default());
        rec.push(row.expected.clone().unwrap_or_default());
        rec.push(row.tiles.to_string());
        self.writer.write_record(&rec)?;
        self.rows += 1;
        if self.rows.is_multiple_of(FLUSH_EVERY) {
            self.writer.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.writer.flush()?;
        Ok(())
    }
}

struct JsonSink {
    out: BufWriter<File>,
    labels: Vec<String>,
    rows: usize,
}

impl Sink for JsonSink {
    fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        let probabilities: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .zip(&row.probabilities)
            .map(|(l, p)| (l.clone(), serde_json::json!(p)))
            .collect();
        let v = serde_json::json!({
            "path": row.path,
            "model": row.model,
            "version": row.version,
            "label": row.label,
            "confidence": row.confidence,
            "probabilities": probabilities,
            "flags": row.flags,
            "error": row.error.clone().unwrap_or_default(),
            "expected": row.expected,
            "tiles": row.tiles,
        });
        serde_json::to_writer(&mut self.out, &v)?;
        self.out.write_all(b"\n")?;
        self.rows += 1;
        if self.rows.is_multiple_of(FLUSH_EVERY) {
            self.out.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

struct ParquetSink {
    path: PathBuf,
    labels: Vec<String>,
    rows: Vec<Row>,
}

impl ParquetSink {
    fn new(path: &Path, labels: &[String]) -> ParquetSink {
        ParquetSink {
            path: path.to_owned(),
            labels: labels.to_vec(),
            rows: Vec::new(),
        }
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, row: &Row) -> anyhow::Result<()> {
        self.rows.push(row.clone());
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt32Array};
        use arrow_schema::{DataType, Field, Schema};

        let rows = &self.rows;
        let text = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        let mut fields = vec![
            Field::new("path", DataType::Utf8, false),
            Field::new("model", DataType::Utf8, false),
            Field::new("version", DataType::Utf8, false),
            Field::new("label", DataType::Utf8, true),
            Field::new("confidence", DataType::Float32, true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            text(&|r| Some(r.path.clone())),
            text(&|r| Some(r.model.clone())),
            text(&|r| Some(r.version.clone())),
            text(&|r| r.label.clone()),
            Arc::new(Float32Array::from(
                rows.iter().map(|r| r.confidence).collect::<Vec<_>>(),
            )),
        ];
        for (i, l) in self.labels.iter().enumerate() {
            fields.push(Field::new(format!("p_{l}"), DataType::Float32, true));
            columns.push(Arc::new(Float32Array::from(
                rows.iter()
                    .map(|r| r.probabilities.get(i).copied())
                    .collect::<Vec<_>>(),
            )));
        }
        fields.push(Field::new("flags", DataType::Utf8, false));
        columns.push(text(&|r| Some(r.flags.join(";"))));
        fields.push(Field::new("error", DataType::Utf8, true));
        columns.push(text(&|r| r.error.clone()));
        fields.push(Field::new("expected", DataType::Utf8, true));
        columns.push(text(&|r| r.expected.clone()));
        fields.push(Field::new("tiles", DataType::UInt32, false));
        columns.push(Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.tiles).collect::<Vec<_>>(),
        )));

        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(parent)
            .with_context(|| format!("cannot write in {}", parent.display()))?;
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(tmp.as_file().try_clone()?, batch.schema(), None)?;
        writer.write(&batch)?;
        writer.close()?;
        tmp.persist(&self.path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}
