//! Training your own tch model with spotrun's loop (built by `cargo test`, so it cannot rot).
//!
//! `cargo run --release --example custom_model` trains a 2-layer tanh MLP on a small built-in task.
use spotrun::config;
use spotrun::data::{Data, Dataset};
use spotrun::trainer::{Progress, Trainer};
use tch::nn;

fn my_module(p: &nn::Path, inputs: i64, classes: i64) -> impl nn::ModuleT {
    nn::seq().add(nn::linear(p / "fc1", inputs, 128, Default::default())).add_fn(|x| x.tanh()).add(nn::linear(
        p / "fc2",
        128,
        classes,
        Default::default(),
    ))
}

fn main() -> anyhow::Result<()> {
    let sets = ["train.epochs=3", "data.synthetic.train=6000", "data.synthetic.val=1000", "train.batch_size=512"];
    let cfg = config::load(None, &sets.map(String::from))?.config;
    let samples = Dataset::load(&cfg.data, &cfg.model)?;
    let vs = nn::VarStore::new(tch::Device::cuda_if_available());
    let net = my_module(&vs.root(), samples.features(), samples.classes);
    let data = Data::Samples(samples);
    let mut trainer = Trainer::new(&cfg, &vs, &net, &data, vs.device());
    let progress = Progress::new(false, trainer.total_steps(), cfg.train.epochs);
    let out = trainer.fit(&progress, &mut |_| Ok(()))?;
    if let Some(last) = out.metrics.last() {
        println!("{}", last.val_summary());
    }
    Ok(())
}
