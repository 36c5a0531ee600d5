//! TensorBoard's event file: TFRecord framing around protobuf `Event` messages, and the few messages a
//! logger of scalars and hyperparameters writes (field numbers from TensorBoard's `event.proto`,
//! `summary.proto` and the hparams plugin's `api.proto` and `plugin_data.proto`).

use std::collections::HashMap;

use prost::Message;

/// `tensorboard.Event`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`, the two cases a logger writes.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorboard.Summary`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorboard.Summary.Value`: a scalar (`simple_value`) or, with no value, plugin data.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `tensorboard.SummaryMetadata`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorboard.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.hparams.HParamsPluginData`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(oneof = "HParamsData", tags = "2, 3, 4")]
    pub data: Option<HParamsData>,
}

/// `HParamsPluginData.data`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum HParamsData {
    #[prost(message, tag = "2")]
    Experiment(Experiment),
    #[prost(message, tag = "3")]
    SessionStartInfo(SessionStartInfo),
    #[prost(message, tag = "4")]
    SessionEndInfo(SessionEndInfo),
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Experiment {
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `tensorboard.hparams.HParamInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct HParamInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    /// `DataType`: 1 string, 2 bool, 3 float64.
    #[prost(int32, tag = "4")]
    pub r#type: i32,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
}

/// `tensorboard.hparams.MetricName`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct MetricName {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SessionStartInfo {
    #[prost(map = "string, message", tag = "1")]
    pub hparams: HashMap<String, ProtoValue>,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SessionEndInfo {
    /// `Status`: 1 success.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `google.protobuf.Value`, the kinds a hyperparameter takes.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoValue {
    #[prost(oneof = "Kind", tags = "2, 3, 4")]
    pub kind: Option<Kind>,
}

/// `google.protobuf.Value.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Kind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    String(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

pub(crate) const DATA_TYPE_STRING: i32 = 1;
pub(crate) const DATA_TYPE_FLOAT64: i32 = 3;
pub(crate) const STATUS_SUCCESS: i32 = 1;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs stays strong.
pub(crate) fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CRC32C.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends `event` as one TFRecord: length (u64 LE), its masked CRC, the data, the data's masked CRC.
pub(crate) fn push_record(out: &mut Vec<u8>, event: &Event) {
    let data = event.encode_to_vec();
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&masked_crc(&data).to_le_bytes());
}

/// The events of an event file, every CRC checked.
#[cfg(test)]
pub(crate) fn read_events(mut bytes: &[u8]) -> Result<Vec<Event>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err(format!(
                "truncated record: {} bytes left, {n} needed",
                bytes.len()
            ));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    fn crc(bytes: &mut &[u8], of: &[u8], what: &str) -> Result<(), String> {
        let stored = u32::from_le_bytes(take(bytes, 4)?.try_into().map_err(|_| "crc")?);
        if stored != masked_crc(of) {
            return Err(format!("bad {what} crc"));
        }
        Ok(())
    }
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let len_bytes = take(&mut bytes, 8)?;
        crc(&mut bytes, len_bytes, "length")?;
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| "len")?) as usize;
        let data = take(&mut bytes, len)?;
        crc(&mut bytes, data, "data")?;
        events.push(Event::decode(data).map_err(|e| e.to_string())?);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of CRC-32C, and masked CRCs as TensorBoard's own writer computes them
    /// (`tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c`).
    #[test]
    fn masked_crc32c_matches_tensorboard() {
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"foo"), 0xfebe_8a61);
        assert_eq!(masked_crc(&24u64.to_le_bytes()), 0x224b_7fa3);
    }

    #[test]
    fn a_record_reads_back_and_a_flipped_byte_is_caught() {
        let event = Event {
            wall_time: 1.5,
            step: 7,
            what: Some(What::Summary(Summary {
                value: vec![SummaryValue {
                    tag: "val_loss".into(),
                    simple_value: Some(0.25),
                    metadata: None,
                }],
            })),
        };
        let mut bytes = Vec::new();
        push_record(&mut bytes, &event);
        assert_eq!(read_events(&bytes).unwrap(), vec![event]);
        let last = bytes.len() - 5;
        bytes[last] ^= 1;
        assert_eq!(read_events(&bytes).unwrap_err(), "bad data crc");
    }
}
