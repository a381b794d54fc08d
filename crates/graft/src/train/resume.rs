//! Resumable checkpoints: what a training needs to continue after an interruption exactly as if it had not
//! stopped — the step's models and optimizer states (moments, step counts), each callback's state (early
//! stopping's counters and best weights, the best checkpoint's value) and the history so far; the schedule's
//! position is replayed from the history, the shuffle and the noise come from the seed and the epoch.
//!
//! A checkpoint is a folder `checkpoints/resume-NNNNN` (the epoch it ends) written under a temporary name, every
//! file synced, with `manifest.json` last (the SHA-256 of every file), then renamed into place and its parent
//! synced: a folder with that name is complete, and a file damaged afterwards fails its checksum. The two newest
//! are kept, so a damaged newest one falls back to the one before.
//!
//! Optimizer states are keyed by parameter ids, which burn draws at random when a model is built; each saved
//! optimizer therefore comes with its model's ids by parameter name, and the rebuilt model takes those ids back.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::data::fsio::write_atomic;
use crate::error::{Context, Error, Result};
use crate::model::Graph;
use crate::model::io::{load_model, save_model};
use crate::model::params::{ParamMapper, ParamPath, ParamVisitor, map_params, visit_params};

/// The prefix of the resumable checkpoints' folders in `checkpoints/`.
pub const RESUME_PREFIX: &str = "resume-";
const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.json";
/// Resumable checkpoints kept: the newest and its fallback.
const KEPT: usize = 2;

/// A checkpoint to continue from: its folder, the epochs it has, and their history.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub dir: PathBuf,
    pub epoch: usize,
    pub history: Vec<Map<String, Json>>,
    /// The epoch at which a callback stopped training, when one did (then nothing is left to train).
    pub stopped_early: Option<usize>,
    /// A checkpoint written inside epoch `epoch + 1`: how far it had got.
    pub partial: Option<Partial>,
}

/// How far into an epoch a mid-epoch checkpoint was written: the batches done and the epoch's loss so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub batches: usize,
    pub loss_sum: f64,
    pub seen: usize,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    epoch: usize,
    /// Path relative to the checkpoint folder → SHA-256, hex.
    files: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct State {
    epoch: usize,
    history: Vec<Map<String, Json>>,
    stopped_early: Option<usize>,
    #[serde(default)]
    partial: Option<Partial>,
}

/// Writes a resumable checkpoint into `checkpoints` after `epoch` complete epochs (and, with `partial`, that far
/// into the next): `save` fills the folder (models, optimizers, callback states), this adds the history, the
/// manifest, and publishes it; older checkpoints beyond the two newest are removed.
pub fn write_checkpoint(
    checkpoints: &Path,
    epoch: usize,
    partial: Option<Partial>,
    history: &[Map<String, Json>],
    stopped_early: Option<usize>,
    save: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(checkpoints).in_file(checkpoints)?;
    let tmp = checkpoints.join(format!(".{RESUME_PREFIX}tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).in_file(&tmp)?;
    }
    let dest = checkpoints.join(match partial {
        Some(p) => format!("{RESUME_PREFIX}{epoch:05}-{:07}", p.batches),
        None => format!("{RESUME_PREFIX}{epoch:05}"),
    });
    let written = fill_checkpoint(&tmp, &dest, epoch, partial, history, stopped_early, save);
    if let Err(e) = written {
        // A full disk or a read-only file system: what was written of this checkpoint goes, the ones before stay.
        let _ = std::fs::remove_dir_all(&tmp);
        let previous = match resume_dirs(checkpoints) {
            Ok(dirs) if !dirs.is_empty() => format!(
                "the last good checkpoint, {}, is intact: once the disk is writable again, continue with the same \
                 command and --resume",
                dirs[0].1.display()
            ),
            _ => {
                "no earlier checkpoint exists: once the disk is writable again, run the training anew with --overwrite"
                    .to_string()
            }
        };
        return Err(Error::new(format!(
            "cannot write the resumable checkpoint {}: {e}; {previous}",
            dest.display()
        )));
    }
    sync_dir(checkpoints)?;
    for old in resume_dirs(checkpoints)?.into_iter().skip(KEPT) {
        std::fs::remove_dir_all(&old.1).in_file(&old.1)?;
    }
    Ok(dest)
}

/// Writes the checkpoint into `tmp` and renames it to `dest`.
fn fill_checkpoint(
    tmp: &Path,
    dest: &Path,
    epoch: usize,
    partial: Option<Partial>,
    history: &[Map<String, Json>],
    stopped_early: Option<usize>,
    save: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(tmp).in_file(tmp)?;
    save(tmp)?;
    crate::data::fault::point("checkpoint-write");
    let state = State {
        epoch,
        history: history.to_vec(),
        stopped_early,
        partial,
    };
    write_json(&tmp.join(STATE), &state)?;
    let mut files = BTreeMap::new();
    for path in files_under(tmp)? {
        sync_file(&path)?;
        let rel = relative(tmp, &path);
        files.insert(rel, sha256_file(&path)?);
    }
    write_json(&tmp.join(MANIFEST), &Manifest { epoch, files })?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).in_file(dest)?;
    }
    std::fs::rename(tmp, dest).in_file(dest)
}

/// The newest resumable checkpoint in `checkpoints` whose files all pass their checksums; a damaged one is named
/// in `notes` and the one before it tried. `None` when there is none (the run stopped before its first epoch
/// ended); an error when every one is damaged.
pub fn find_checkpoint(checkpoints: &Path, notes: &mut Vec<String>) -> Result<Option<ResumePoint>> {
    let candidates = resume_dirs(checkpoints)?;
    if candidates.is_empty() {
        return Ok(None);
    }
    for ((epoch, batches), dir) in &candidates {
        match verify(dir) {
            Ok(()) => {
                let state: State = read_json(&dir.join(STATE))?;
                if (state.epoch, state.partial.map_or(0, |p| p.batches)) != (*epoch, *batches) {
                    notes.push(format!(
                        "{}: holds another point of training than its name says",
                        dir.display()
                    ));
                    continue;
                }
                return Ok(Some(ResumePoint {
                    dir: dir.clone(),
                    epoch: *epoch,
                    history: state.history,
                    stopped_early: state.stopped_early,
                    partial: state.partial,
                }));
            }
            Err(e) => notes.push(format!("{e}; falling back to the checkpoint before it")),
        }
    }
    Err(Error::new(format!(
        "every resumable checkpoint is damaged ({}); start the run anew with --overwrite",
        notes.join("; ")
    ))
    .in_file(checkpoints))
}

/// Writes the manifest of the checkpoint folder `dir` for the files as they are now — for tools that change a
/// checkpoint on purpose (the fuzz harness, to reach the state parser past the checksums).
pub fn rewrite_manifest(dir: &Path) -> Result<()> {
    let state: State = read_json(&dir.join(STATE)).unwrap_or(State {
        epoch: 0,
        history: vec![],
        stopped_early: None,
        partial: None,
    });
    let mut files = BTreeMap::new();
    for path in files_under(dir)? {
        let rel = relative(dir, &path);
        if rel != MANIFEST {
            files.insert(rel, sha256_file(&path)?);
        }
    }
    write_json(
        &dir.join(MANIFEST),
        &Manifest {
            epoch: state.epoch,
            files,
        },
    )
}

/// Checks every file of a checkpoint folder against its manifest.
pub fn verify(dir: &Path) -> Result<()> {
    let manifest: Manifest = read_json(&dir.join(MANIFEST))?;
    for (rel, want) in &manifest.files {
        let path = dir.join(rel);
        let got = sha256_file(&path)?;
        if &got != want {
            return Err(
                Error::new("damaged checkpoint: the file's checksum does not match its manifest").in_file(&path),
            );
        }
    }
    Ok(())
}

/// The resumable checkpoints in `checkpoints` by (complete epochs, batches into the next), newest first.
fn resume_dirs(checkpoints: &Path) -> Result<Vec<((usize, usize), PathBuf)>> {
    let mut found = vec![];
    let entries = match std::fs::read_dir(checkpoints) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(checkpoints, e)),
    };
    for entry in entries {
        let entry = entry.in_file(checkpoints)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(RESUME_PREFIX) else {
            continue;
        };
        let (epoch, batches) = rest.split_once('-').unwrap_or((rest, "0"));
        if let (Ok(e), Ok(b)) = (epoch.parse::<usize>(), batches.parse::<usize>()) {
            found.push(((e, b), entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// Saves a model and its optimizer's state into `dir` as `NAME/` (the model), `NAME.optim` and `NAME.ids.json`.
pub fn save_trained(dir: &Path, name: &str, model: &Graph, optim: &ModuleOptimizer) -> Result<()> {
    save_model(model, &dir.join(name))?;
    let path = dir.join(format!("{name}.optim"));
    optim
        .save(&path)
        .map_err(|e| Error::new(format!("cannot write the optimizer state: {e:?}")).in_file(&path))?;
    write_json(&dir.join(format!("{name}.ids.json")), &param_ids(model))
}

/// Reads back what [`save_trained`] wrote: the weights into `model` (whose parameters take the saved ids) and the
/// state into `optim`.
pub fn load_trained(dir: &Path, name: &str, model: &mut Graph, optim: &mut ModuleOptimizer) -> Result<()> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let saved = load_model(&dir.join(name), &device)?;
    let ids: BTreeMap<String, u64> = read_json(&dir.join(format!("{name}.ids.json")))?;
    *model = take_weights_and_ids(model.clone(), &saved, &ids)?;
    let path = dir.join(format!("{name}.optim"));
    let taken = std::mem::replace(optim, burn::optim::SgdConfig::new().init());
    *optim = taken
        .load(&path)
        .map_err(|e| Error::new(format!("cannot read the optimizer state: {e:?}")).in_file(&path))?;
    Ok(())
}

/// The id of every parameter of `model` by name.
pub fn param_ids(model: &Graph) -> BTreeMap<String, u64> {
    struct Ids(BTreeMap<String, u64>);
    impl ParamVisitor for Ids {
        fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            self.0.insert(path.name(), param.id.val());
        }
    }
    let mut ids = Ids(BTreeMap::new());
    visit_params(model, &mut ids);
    ids.0
}

/// `model` with the values of `saved` (the same architecture) and the parameter ids `ids`, keeping `model`'s own
/// trainable/frozen marks.
fn take_weights_and_ids(model: Graph, saved: &Graph, ids: &BTreeMap<String, u64>) -> Result<Graph> {
    struct Values(BTreeMap<String, TensorData>);
    impl ParamVisitor for Values {
        fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            self.0.insert(path.name(), param.val().into_data());
        }
    }
    let mut values = Values(BTreeMap::new());
    visit_params(saved, &mut values);
    struct Take<'a> {
        values: BTreeMap<String, TensorData>,
        ids: &'a BTreeMap<String, u64>,
        missing: Vec<String>,
    }
    impl ParamMapper for Take<'_> {
        fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = path.name();
            match (self.values.remove(&name), self.ids.get(&name)) {
                (Some(data), Some(&id)) => {
                    let device = param.lazy_device();
                    param.transform_for_load(Tensor::<D>::from_data(data, &device), ParamId::from(id))
                }
                _ => {
                    self.missing.push(name);
                    param
                }
            }
        }
    }
    let mut take = Take {
        values: values.0,
        ids,
        missing: vec![],
    };
    let model = map_params(model, &mut take);
    if !take.missing.is_empty() || !take.values.is_empty() {
        return Err(Error::new(format!(
            "the checkpoint does not fit the model: missing {:?}, unexpected {:?}",
            take.missing,
            take.values.keys().collect::<Vec<_>>()
        )));
    }
    Ok(model)
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).in_file(path)?;
    serde_json::from_str(&text).map_err(|e| Error::new(format!("damaged checkpoint: {e}")).in_file(path))
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).in_file(&d)? {
            let path = entry.in_file(&d)?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).in_file(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).in_file(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).in_file(path)
}

/// Makes a rename inside `dir` durable (on Unix a directory is synced by opening it; elsewhere renames are
/// durable once they return or cannot be synced this way).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir).and_then(|f| f.sync_all()).in_file(dir)?;
    }
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("graft-resume-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn history(n: usize) -> Vec<Map<String, Json>> {
        (1..=n)
            .map(|e| {
                let mut m = Map::new();
                m.insert("epoch".into(), Json::from(e));
                m
            })
            .collect()
    }

    #[test]
    fn the_newest_good_checkpoint_is_found_and_a_damaged_one_falls_back() {
        let d = scratch("find");
        for epoch in 1..=3 {
            write_checkpoint(&d, epoch, None, &history(epoch), None, |dir| {
                std::fs::write(dir.join("weights.bin"), vec![epoch as u8; 100]).in_file(dir)
            })
            .unwrap();
        }
        // Only the two newest are kept.
        assert!(!d.join("resume-00001").exists());
        let mut notes = vec![];
        let point = find_checkpoint(&d, &mut notes).unwrap().unwrap();
        assert_eq!((point.epoch, point.history.len(), notes.len()), (3, 3, 0));
        // A flipped byte in the newest: refused with the file named, and epoch 2 used instead.
        let damaged = d.join("resume-00003").join("weights.bin");
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&damaged, bytes).unwrap();
        let point = find_checkpoint(&d, &mut notes).unwrap().unwrap();
        assert_eq!(point.epoch, 2);
        assert!(
            notes[0].contains("weights.bin") && notes[0].contains("checksum"),
            "{notes:?}"
        );
        // Both damaged: an error that says what to do.
        std::fs::write(d.join("resume-00002").join("weights.bin"), b"x").unwrap();
        let err = find_checkpoint(&d, &mut vec![]).unwrap_err().to_string();
        assert!(
            err.contains("every resumable checkpoint is damaged") && err.contains("--overwrite"),
            "{err}"
        );
        assert!(find_checkpoint(&scratch("none"), &mut vec![]).unwrap().is_none());
    }
}
