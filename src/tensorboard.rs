//! TensorBoard event files, written directly: TFRecord framing (length, masked CRC-32C of the length, payload,
//! masked CRC-32C of the payload) around hand-encoded `Event` protobufs (tensorboard's `event.proto` and
//! `summary.proto`: a few fields, so no `protoc` at build time). The HParams plugin's protos are encoded the same
//! way.
//!
//! One file per process (`events.out.tfevents.<secs>.<host>.<pid>`): a resumed run appends a new file whose
//! first event after the version is a `SessionLog START` at the resumed step, so TensorBoard drops the points the
//! previous process logged after that step, and a requeued run shows one clean curve. Imports nothing of spotrun.
use std::io::Write;
use std::path::{Path, PathBuf};

/// A protobuf message under construction (only the wire types TensorBoard's protos need).
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.varint(v);
        self
    }

    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    fn msg(&mut self, field: u32, m: &Proto) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// `Event { wall_time = 1, step = 2, file_version = 3 | summary = 5 | session_log = 6 }`.
fn event(step: i64, body: impl FnOnce(&mut Proto)) -> Vec<u8> {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut e = Proto::default();
    e.double(1, wall).uint(2, step as u64);
    body(&mut e);
    e.0
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
    fn proto(&self) -> Proto {
        let mut v = Proto::default();
        match self {
            HValue::Number(x) => v.double(2, *x),
            HValue::Text(s) => v.bytes(3, s.as_bytes()),
            HValue::Bool(b) => v.uint(4, u64::from(*b)),
        };
        v
    }
}

/// An open event file. Write errors are reported once by the caller's choice; logging never stops training.
pub struct EventWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing) and writes the version record; when `resumed_at` is
    /// given, a `SessionLog START` at that step follows, which makes TensorBoard discard older points after it.
    pub fn create(dir: &Path, resumed_at: Option<u64>) -> std::io::Result<EventWriter> {
        std::fs::create_dir_all(dir)?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = format!("events.out.tfevents.{secs:010}.{}.{}", host.trim(), std::process::id());
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(&path)?;
        let mut w = EventWriter { file: std::io::BufWriter::new(file), path };
        w.write(&event(0, |e| {
            e.bytes(3, b"brain.Event:2");
        }))?;
        if let Some(step) = resumed_at {
            let mut log = Proto::default();
            log.uint(1, 1); // SessionLog.status = START
            w.write(&event(step as i64, |e| {
                e.msg(6, &log);
            }))?;
        }
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&record(payload))
    }

    /// Scalars at `step`: one `Summary` with a `simple_value` per `(tag, value)`.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> std::io::Result<()> {
        let mut summary = Proto::default();
        for (tag, v) in values.iter().filter(|(_, v)| v.is_finite()) {
            let mut value = Proto::default();
            value.bytes(1, tag.as_bytes()).float(2, *v as f32);
            summary.msg(1, &value);
        }
        self.write(&event(step as i64, |e| {
            e.msg(5, &summary);
        }))
    }

    /// The HParams plugin's session start: this run's hyperparameters, and the metric tags to compare runs by
    /// (written as an experiment record too, so the HParams tab lists them).
    pub fn hparams(&mut self, hparams: &[(String, HValue)], metrics: &[&str]) -> std::io::Result<()> {
        let mut start = Proto::default();
        for (k, v) in hparams {
            let mut entry = Proto::default();
            entry.bytes(1, k.as_bytes()).msg(2, &v.proto());
            start.msg(1, &entry); // map<string, Value> hparams = 1
        }
        let mut experiment = Proto::default();
        for (k, v) in hparams {
            let mut info = Proto::default();
            info.bytes(1, k.as_bytes()); // HParamInfo.name
            let kind = match v {
                HValue::Number(_) => 3,
                HValue::Text(_) => 1,
                HValue::Bool(_) => 2,
            };
            info.uint(4, kind); // HParamInfo.type: DATA_TYPE_STRING = 1, BOOL = 2, FLOAT64 = 3
            experiment.msg(4, &info); // Experiment.hparam_infos = 4
        }
        for m in metrics {
            let mut name = Proto::default();
            name.bytes(2, m.as_bytes()); // MetricName.tag
            let mut info = Proto::default();
            info.msg(1, &name); // MetricInfo.name
            experiment.msg(5, &info); // Experiment.metric_infos = 5
        }
        for (tag, field, body) in [("_hparams_/experiment", 2, experiment), ("_hparams_/session_start_info", 3, start)]
        {
            let mut data = Proto::default();
            data.uint(1, 0).msg(field, &body); // HParamsPluginData { version = 1, experiment = 2 | start = 3 }
            let mut plugin = Proto::default();
            plugin.bytes(1, b"hparams").bytes(2, &data.0); // PluginData { plugin_name, content }
            let mut meta = Proto::default();
            meta.msg(1, &plugin); // SummaryMetadata.plugin_data = 1
                                  // A scalar float tensor 0, as tensorboard's own hparams summaries carry (TensorProto { dtype = DT_FLOAT,
                                  // tensor_shape = {}, float_val = [0] }).
            let mut tensor = Proto::default();
            tensor.uint(1, 1).bytes(2, &[]).bytes(5, &0f32.to_le_bytes());
            let mut value = Proto::default();
            value.bytes(1, tag.as_bytes()).msg(9, &meta).msg(8, &tensor); // Summary.Value { tag, metadata, tensor }
            let mut summary = Proto::default();
            summary.msg(1, &value);
            self.write(&event(0, |e| {
                e.msg(5, &summary);
            }))?;
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
    fn varints_and_crc_match_known_values() {
        let mut p = Proto::default();
        p.varint(300);
        assert_eq!(p.0, [0xac, 0x02]);
        // CRC-32C of "123456789" is 0xe3069283 (RFC 3720 check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
    }
}
