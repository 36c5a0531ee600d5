use std::process::Command;

use super::*;
use crate::logger::event_file::{read_events, HParamsData, HParamsPluginData, Kind};
use crate::strategy::SingleProcess;

fn hparams() -> Value {
    Value::Map(vec![
        (Value::Text("lr".into()), Value::Float(0.01)),
        (Value::Text("name".into()), Value::Text("mlp".into())),
        (
            Value::Text("hidden".into()),
            Value::Array(vec![Value::Integer(32.into()), Value::Integer(16.into())]),
        ),
        (
            Value::Text("opt".into()),
            Value::Map(vec![(Value::Text("nesterov".into()), Value::Bool(true))]),
        ),
        (Value::Text("seed".into()), Value::Null),
    ])
}

fn metrics(pairs: &[(&str, f32)]) -> BTreeMap<String, MetricValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), MetricValue::F32(*v)))
        .collect()
}

/// A run as the trainer drives it: hyperparameters, then metrics saved twice.
fn run(logger: &mut TensorBoardLogger) -> PathBuf {
    let fs = RankZeroFs::new(&SingleProcess);
    logger.log_hyperparams(&hparams(), fs).unwrap();
    logger
        .log_metrics(&metrics(&[("train_loss", 0.5)]), 1, fs)
        .unwrap();
    logger
        .log_metrics(&metrics(&[("train_loss", 0.25)]), 2, fs)
        .unwrap();
    logger.save(fs).unwrap();
    logger
        .log_metrics(&metrics(&[("epoch", 0.0), ("val_loss", 0.75)]), 2, fs)
        .unwrap();
    logger.save(fs).unwrap();
    logger.event_file().unwrap().to_path_buf()
}

fn scalars(events: &[Event]) -> Vec<(String, i64, f32)> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => Some(
                s.value
                    .iter()
                    .filter_map(|v| Some((v.tag.clone(), e.step, v.simple_value?)))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn plugin_data(events: &[Event]) -> Vec<(String, HParamsPluginData)> {
    let mut out = Vec::new();
    for e in events {
        if let Some(What::Summary(s)) = &e.what {
            for v in &s.value {
                if let Some(pd) = v.metadata.as_ref().and_then(|m| m.plugin_data.as_ref()) {
                    assert_eq!(pd.plugin_name, "hparams");
                    let data =
                        <HParamsPluginData as prost::Message>::decode(&pd.content[..]).unwrap();
                    out.push((v.tag.clone(), data));
                }
            }
        }
    }
    out
}

#[test]
fn event_files_hold_scalars_by_step_and_hparams_in_lightning_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut logger = TensorBoardLogger::new(dir.path());
    let file = run(&mut logger);

    let version_dir = dir.path().join("lightning_logs/version_0");
    assert_eq!(file.parent().unwrap(), version_dir);
    let name = file.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"], "{name}");
    assert_eq!(parts[3].len(), 10, "{name}");
    assert!(parts[3].bytes().all(|b| b.is_ascii_digit()), "{name}");
    assert!(
        name.ends_with(&format!(
            ".{}.{}",
            std::process::id(),
            parts[parts.len() - 1]
        )),
        "{name}"
    );
    let yaml = std::fs::read_to_string(version_dir.join("hparams.yaml")).unwrap();
    assert!(
        yaml.starts_with("lr: 0.01\nname: mlp\nhidden:\n- 32\n- 16\n"),
        "{yaml}"
    );

    let events = read_events(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        events[0].what,
        Some(What::FileVersion("brain.Event:2".into()))
    );
    assert_eq!(
        scalars(&events),
        [
            ("hp_metric".to_string(), 0, -1.0),
            ("train_loss".to_string(), 1, 0.5),
            ("train_loss".to_string(), 2, 0.25),
            ("epoch".to_string(), 2, 0.0),
            ("val_loss".to_string(), 2, 0.75),
        ]
    );

    let hp = plugin_data(&events);
    let tags: Vec<&str> = hp.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        tags,
        [
            "_hparams_/experiment",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info"
        ]
    );
    let Some(HParamsData::Experiment(exp)) = &hp[0].1.data else {
        panic!("{:?}", hp[0]);
    };
    let infos: Vec<(&str, i32)> = exp
        .hparam_infos
        .iter()
        .map(|i| (i.name.as_str(), i.r#type))
        .collect();
    assert_eq!(
        infos,
        [
            ("hidden", 1),
            ("lr", 3),
            ("name", 1),
            ("opt/nesterov", 3),
            ("seed", 1)
        ]
    );
    assert_eq!(exp.metric_infos[0].name.as_ref().unwrap().tag, "hp_metric");
    let Some(HParamsData::SessionStartInfo(start)) = &hp[1].1.data else {
        panic!("{:?}", hp[1]);
    };
    let value = |k: &str| start.hparams[k].kind.clone().unwrap();
    assert_eq!(value("lr"), Kind::Number(0.01));
    assert_eq!(value("name"), Kind::String("mlp".into()));
    assert_eq!(value("hidden"), Kind::String("[32, 16]".into()));
    assert_eq!(value("opt/nesterov"), Kind::Number(1.0));
    assert_eq!(value("seed"), Kind::String("None".into()));
    assert!(matches!(&hp[2].1.data, Some(HParamsData::SessionEndInfo(e)) if e.status == 1));

    let mut second = TensorBoardLogger::new(dir.path());
    assert_eq!(
        second.log_dir().unwrap(),
        dir.path().join("lightning_logs/version_1")
    );
}

#[test]
fn without_default_hp_metric_the_event_file_has_no_hparams() {
    let dir = tempfile::tempdir().unwrap();
    let mut logger = TensorBoardLogger::with_name(dir.path(), "tb")
        .version(7)
        .default_hp_metric(false);
    let file = run(&mut logger);
    assert_eq!(file.parent().unwrap(), dir.path().join("tb/version_7"));
    assert!(dir.path().join("tb/version_7/hparams.yaml").is_file());
    let events = read_events(&std::fs::read(&file).unwrap()).unwrap();
    assert!(plugin_data(&events).is_empty());
    assert_eq!(scalars(&events)[0], ("train_loss".to_string(), 1, 0.5));
}

/// TensorBoard's own reader finds the scalars by step and the hyperparameters. Skipped, with a notice,
/// where `python3` with the `tensorboard` package is missing (`pip install tensorboard`).
#[test]
fn tensorboard_reads_the_event_file() {
    let has_tensorboard = Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tensorboard {
        eprintln!("skipped: `python3 -c \"import tensorboard\"` fails (pip install tensorboard)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut logger = TensorBoardLogger::new(dir.path());
    run(&mut logger);
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
acc = EventAccumulator(sys.argv[1])
acc.Reload()
for tag in sorted(acc.Tags()["scalars"]):
    for s in acc.Scalars(tag):
        print("scalar", tag, s.step, s.value)
content = acc.PluginTagToContent("hparams")
start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
for k in sorted(start.session_start_info.hparams):
    v = start.session_start_info.hparams[k]
    print("hparam", k, v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind")))
exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
print("metrics", [m.name.tag for m in exp.experiment.metric_infos])
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(dir.path().join("lightning_logs/version_0"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "scalar epoch 2 0.0\n\
         scalar hp_metric 0 -1.0\n\
         scalar train_loss 1 0.5\n\
         scalar train_loss 2 0.25\n\
         scalar val_loss 2 0.75\n\
         hparam hidden string_value [32, 16]\n\
         hparam lr number_value 0.01\n\
         hparam name string_value mlp\n\
         hparam opt/nesterov number_value 1.0\n\
         hparam seed string_value None\n\
         metrics ['hp_metric']\n"
    );
}

/// Rank 1 of a data-parallel run logs the same calls and writes nothing: every write goes through the
/// rank-zero gate.
#[test]
fn other_ranks_write_nothing() {
    use crate::strategy::testing::RankOne;
    let dir = tempfile::tempdir().unwrap();
    let fs = RankZeroFs::new(&RankOne);
    let mut logger = TensorBoardLogger::new(dir.path());
    logger.log_hyperparams(&hparams(), fs).unwrap();
    logger
        .log_metrics(&metrics(&[("train_loss", 0.5)]), 1, fs)
        .unwrap();
    logger.save(fs).unwrap();
    logger
        .log_metrics(&metrics(&[("train_loss", 0.25)]), 2, fs)
        .unwrap();
    logger.save(fs).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
