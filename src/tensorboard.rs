//! TensorBoard event files, written directly: TFRecord framing (length, masked CRC-32C of the length, payload,
//! masked CRC-32C of the payload) around `Event` protobufs. The messages are declared once below, field for field
//! as tensorboard's `event.proto`, `summary.proto`, `tensor.proto` and the HParams plugin's `api.proto` /
//! `plugin_data.proto` number them (prost's derive: no `protoc` at build time), so a tag is read in one place.
//!
//! One file per process (`events.out.tfevents.<secs>.<host>.<pid>`), and every file's first event after the
//! version is a `SessionLog START` at the first step this process will log: a resumed run's at the step after its
//! checkpoint, a fresh start's at step 1. TensorBoard's readers drop the points an earlier process logged at or
//! after that step (the legacy `EventAccumulator` on every START; the plugin accumulator, `--load_fast=false`,
//! on every START but a run's first), so a requeued run shows one clean curve whether or not its killed process
//! had committed a checkpoint. Imports nothing of spotrun.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

/// `event.proto`: `Event`. Only the fields spotrun writes; `what` is the proto's `oneof what`.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5, 7")]
    what: Option<What>,
}

/// `event.proto`: `Event.what` (field 6, the deprecated `log_message`, is not this).
#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `event.proto`: `SessionLog`.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionLog {
    #[prost(enumeration = "SessionStatus", tag = "1")]
    status: i32,
}

/// `event.proto`: `SessionLog.SessionStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum SessionStatus {
    StatusUnspecified = 0,
    Start = 1,
}

/// `summary.proto`: `Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `summary.proto`: `Summary.Value` (`value` is the proto's `oneof value`).
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
    #[prost(oneof = "ValueKind", tags = "2, 8")]
    value: Option<ValueKind>,
}

/// `summary.proto`: `Summary.Value.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
enum ValueKind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `summary.proto`: `SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

/// `summary.proto`: `SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    content: Vec<u8>,
}

/// `tensor.proto`: `TensorProto` (a float scalar: `dtype`, an empty `tensor_shape`, `float_val`).
#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShapeProto>,
    #[prost(float, repeated, tag = "5")]
    float_val: Vec<f32>,
}

/// `tensor_shape.proto`: `TensorShapeProto` (no dimensions: a scalar).
#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeProto {}

/// `types.proto`: `DataType.DT_FLOAT`.
const DT_FLOAT: i32 = 1;

/// The HParams plugin's `plugin_data.proto`: `HParamsPluginData` (`data` is its `oneof data`).
#[derive(Clone, PartialEq, prost::Message)]
struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    version: i32,
    #[prost(oneof = "HParamsData", tags = "2, 3")]
    data: Option<HParamsData>,
}

/// `plugin_data.proto`: `HParamsPluginData.data`.
#[derive(Clone, PartialEq, prost::Oneof)]
enum HParamsData {
    #[prost(message, tag = "2")]
    Experiment(Experiment),
    #[prost(message, tag = "3")]
    SessionStartInfo(SessionStartInfo),
}

/// `api.proto`: `Experiment`.
#[derive(Clone, PartialEq, prost::Message)]
struct Experiment {
    #[prost(message, repeated, tag = "4")]
    hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    metric_infos: Vec<MetricInfo>,
}

/// `api.proto`: `HParamInfo` (`type` is `DataType`: STRING = 1, BOOL = 2, FLOAT64 = 3).
#[derive(Clone, PartialEq, prost::Message)]
struct HParamInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "4")]
    r#type: i32,
}

/// `api.proto`: `MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    name: Option<MetricName>,
}

/// `api.proto`: `MetricName`.
#[derive(Clone, PartialEq, prost::Message)]
struct MetricName {
    #[prost(string, tag = "2")]
    tag: String,
}

/// `plugin_data.proto`: `SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    hparams: BTreeMap<String, ProtoValue>,
}

/// `google/protobuf/struct.proto`: `Value` (only the kinds hyperparameters take).
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoValue {
    #[prost(oneof = "ProtoKind", tags = "2, 3, 4")]
    kind: Option<ProtoKind>,
}

/// `struct.proto`: `Value.kind` (variants named as the proto's fields).
#[derive(Clone, PartialEq, prost::Oneof)]
#[allow(clippy::enum_variant_names)]
enum ProtoKind {
    #[prost(double, tag = "2")]
    NumberValue(f64),
    #[prost(string, tag = "3")]
    StringValue(String),
    #[prost(bool, tag = "4")]
    BoolValue(bool),
}

/// An `Event` now, at `step`.
fn event(step: u64, what: What) -> Event {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    Event { wall_time: wall, step: step as i64, what: Some(what) }
}

/// CRC-32C masked as TFRecord does.
fn masked_crc(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(b);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `payload`.
fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(payload.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(payload);
    r.extend_from_slice(&masked_crc(payload).to_le_bytes());
    r
}

/// A `google.protobuf.Value` (the HParams plugin's hyperparameter values).
#[derive(Debug, Clone, PartialEq)]
pub enum HValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl HValue {
    fn proto(&self) -> ProtoValue {
        let kind = match self {
            HValue::Number(x) => ProtoKind::NumberValue(*x),
            HValue::Text(s) => ProtoKind::StringValue(s.clone()),
            HValue::Bool(b) => ProtoKind::BoolValue(*b),
        };
        ProtoValue { kind: Some(kind) }
    }

    /// `HParamInfo.type`: `DATA_TYPE_STRING` = 1, `BOOL` = 2, `FLOAT64` = 3.
    fn data_type(&self) -> i32 {
        match self {
            HValue::Number(_) => 3,
            HValue::Text(_) => 1,
            HValue::Bool(_) => 2,
        }
    }
}

/// An open event file. Write errors are reported once by the caller's choice; logging never stops training.
pub struct EventWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing): the version record, then a `SessionLog START` at
    /// `first_step`, the first step this process will log (1 for a fresh start, the step after the checkpoint for
    /// a resume), which makes TensorBoard discard what earlier processes logged from that step on.
    pub fn create(dir: &Path, first_step: u64) -> std::io::Result<EventWriter> {
        std::fs::create_dir_all(dir)?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = format!("events.out.tfevents.{secs:010}.{}.{}", host.trim(), std::process::id());
        // A long-lived worker can resume the same run twice within a second (an adaptive sweep's promotion): the
        // next file takes a suffix, and sorts after the first.
        let (file, path) = (0..1000)
            .find_map(|k| {
                let path = dir.join(if k == 0 { name.clone() } else { format!("{name}.{k}") });
                match std::fs::OpenOptions::new().create_new(true).write(true).open(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                    other => Some(other.map(|f| (f, path))),
                }
            })
            .unwrap_or_else(|| Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)))?;
        let mut w = EventWriter { file: std::io::BufWriter::new(file), path };
        w.write(&event(0, What::FileVersion("brain.Event:2".into())))?;
        let start = SessionLog { status: SessionStatus::Start as i32 };
        w.write(&event(first_step, What::SessionLog(start)))?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, e: &Event) -> std::io::Result<()> {
        self.file.write_all(&record(&e.encode_to_vec()))
    }

    /// Scalars at `step`: one `Summary` with a `simple_value` per `(tag, value)`.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> std::io::Result<()> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| SummaryValue {
                tag: (*tag).to_string(),
                metadata: None,
                value: Some(ValueKind::SimpleValue(*v as f32)),
            })
            .collect();
        self.write(&event(step, What::Summary(Summary { value })))
    }

    /// The HParams plugin's session start: this run's hyperparameters, and the metric tags to compare runs by
    /// (written as an experiment record too, so the HParams tab lists them).
    pub fn hparams(&mut self, hparams: &[(String, HValue)], metrics: &[&str]) -> std::io::Result<()> {
        let experiment = Experiment {
            hparam_infos: hparams.iter().map(|(k, v)| HParamInfo { name: k.clone(), r#type: v.data_type() }).collect(),
            metric_infos: metrics
                .iter()
                .map(|m| MetricInfo { name: Some(MetricName { tag: (*m).to_string() }) })
                .collect(),
        };
        let start = SessionStartInfo { hparams: hparams.iter().map(|(k, v)| (k.clone(), v.proto())).collect() };
        let records = [
            ("_hparams_/experiment", HParamsData::Experiment(experiment)),
            ("_hparams_/session_start_info", HParamsData::SessionStartInfo(start)),
        ];
        for (tag, data) in records {
            let content = HParamsPluginData { version: 0, data: Some(data) }.encode_to_vec();
            let plugin_data = Some(PluginData { plugin_name: "hparams".into(), content });
            // A scalar float tensor 0, as tensorboard's own hparams summaries carry.
            let tensor = TensorProto { dtype: DT_FLOAT, tensor_shape: Some(TensorShapeProto {}), float_val: vec![0.0] };
            let value = SummaryValue {
                tag: tag.into(),
                metadata: Some(SummaryMetadata { plugin_data }),
                value: Some(ValueKind::Tensor(tensor)),
            };
            self.write(&event(0, What::Summary(Summary { value: vec![value] })))?;
        }
        Ok(())
    }

    /// Pushes buffered records to the file (after every epoch and save; logging is not fsynced).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_framing_match_known_values() {
        // CRC-32C of "123456789" is 0xe3069283 (RFC 3720 check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
    }

    #[test]
    fn the_session_log_is_event_field_7() {
        let e = Event { wall_time: 0.0, step: 0, what: Some(What::SessionLog(SessionLog { status: 1 })) };
        // Field 7, wire type 2 (0x3a), length 2, then SessionLog { status (field 1, varint) = START }.
        assert_eq!(e.encode_to_vec(), [0x3a, 0x02, 0x08, 0x01]);
    }
}
