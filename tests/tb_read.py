"""Reads a TensorBoard log directory with tensorboard's own reader and prints what TensorBoard would show.

    tb_read.py LOGDIR

Prints one JSON object: {"scalars": {tag: [[step, value], ...]}, "hparams": {name: value}, "metrics": [tag, ...]}.
The scalars come from EventAccumulator with purge_orphaned_data on (TensorBoard's default), so points a restarted
run logged again are dropped as TensorBoard drops them; the hyperparameters from the HParams plugin's
session_start_info and experiment records.
"""
import json, sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0}, purge_orphaned_data=True)
acc.Reload()
out = {"scalars": {}, "hparams": {}, "metrics": []}
for tag in acc.Tags()["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
try:
    hp = acc.PluginTagToContent("hparams")
except KeyError:
    hp = {}
for tag, content in hp.items():
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if data.HasField("session_start_info"):
        for k, v in data.session_start_info.hparams.items():
            out["hparams"][k] = getattr(v, v.WhichOneof("kind"))
    if data.HasField("experiment"):
        out["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
print(json.dumps(out))
