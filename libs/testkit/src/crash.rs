//! Crash states: from a record of a program's disk operations, every state of its
//! directory that a power loss (or OS crash) at each point could leave, as POSIX allows.
//!
//! The rules: a file's content is what its last fsync/fdatasync made durable, plus any
//! subset of the writes and truncations since (all subsets for up to six, else
//! prefixes), and each such write may also be torn at its first 4 KiB page boundary. The
//! directory is what its last directory fsync made durable, plus each prefix of the
//! creations, renames and removals since. The record comes from an instrumented file
//! layer (the file logger's `io` module) or from `strace` (the WASM logger).

use std::collections::{BTreeMap, HashMap};

/// One recorded operation. Files are told apart by inode numbers the recorder assigns
/// (a renamed file keeps its inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A file was opened; `created`: it did not exist (a new directory entry).
    Open {
        /// Its name in the directory.
        name: String,
        /// Its inode.
        inode: u64,
        /// Whether the open created it.
        created: bool,
    },
    /// Bytes written at an offset.
    Write {
        /// The file.
        inode: u64,
        /// Where.
        offset: u64,
        /// What.
        data: Vec<u8>,
    },
    /// The file's length set.
    SetLen {
        /// The file.
        inode: u64,
        /// Its new length.
        len: u64,
    },
    /// fsync or fdatasync of a file.
    Sync {
        /// The file.
        inode: u64,
    },
    /// A rename in the directory.
    Rename {
        /// Old name.
        from: String,
        /// New name (replacing any file of that name).
        to: String,
    },
    /// A removal from the directory.
    Remove {
        /// The name removed.
        name: String,
    },
    /// The directory fsynced.
    SyncDir,
    /// A marker from the workload: what it had been told by then (e.g. "ack 7").
    Mark(String),
}

/// 4 KiB: the unit a write may be torn at.
pub const PAGE: u64 = 4096;

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    live: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Create(String, u64),
    Rename(String, String),
    Remove(String),
}

fn apply_file(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(data);
        }
        FileOp::SetLen(len) => content.resize(*len as usize, 0),
    }
}

fn apply_dir(names: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Create(name, inode) => {
            names.insert(name.clone(), *inode);
        }
        DirOp::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        DirOp::Remove(name) => {
            names.remove(name);
        }
    }
}

/// The file system as the record describes it up to some point.
#[derive(Default, Clone)]
pub struct Model {
    inodes: HashMap<u64, Inode>,
    dir_durable: BTreeMap<String, u64>,
    dir_live: BTreeMap<String, u64>,
    dir_pending: Vec<DirOp>,
}

impl Model {
    /// Applies the next recorded operation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Open {
                name,
                inode,
                created,
            } => {
                if *created {
                    self.inodes.insert(*inode, Inode::default());
                    self.dir_live.insert(name.clone(), *inode);
                    self.dir_pending.push(DirOp::Create(name.clone(), *inode));
                }
            }
            Op::Write {
                inode,
                offset,
                data,
            } => self.file_op(
                *inode,
                FileOp::Write {
                    offset: *offset,
                    data: data.clone(),
                },
            ),
            Op::SetLen { inode, len } => self.file_op(*inode, FileOp::SetLen(*len)),
            Op::Sync { inode } => {
                let file = self.inodes.entry(*inode).or_default();
                file.durable = file.live.clone();
                file.pending.clear();
            }
            Op::Rename { from, to } => self.dir_op(DirOp::Rename(from.clone(), to.clone())),
            Op::Remove { name } => self.dir_op(DirOp::Remove(name.clone())),
            Op::SyncDir => {
                self.dir_durable = self.dir_live.clone();
                self.dir_pending.clear();
            }
            Op::Mark(_) => {}
        }
    }

    fn file_op(&mut self, inode: u64, op: FileOp) {
        let file = self.inodes.entry(inode).or_default();
        apply_file(&mut file.live, &op);
        file.pending.push(op);
    }

    fn dir_op(&mut self, op: DirOp) {
        apply_dir(&mut self.dir_live, &op);
        self.dir_pending.push(op);
    }

    /// The current length of a file as the program sees it (for appends).
    pub fn live_len(&self, inode: u64) -> u64 {
        self.inodes.get(&inode).map_or(0, |f| f.live.len() as u64)
    }

    fn file_states(&self, inode: u64) -> Vec<Vec<u8>> {
        let Some(file) = self.inodes.get(&inode) else {
            return vec![Vec::new()];
        };
        let n = file.pending.len();
        let subsets: Vec<Vec<usize>> = if n <= 6 {
            (0..1u32 << n)
                .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
                .collect()
        } else {
            (0..=n).map(|j| (0..j).collect()).collect()
        };
        let mut states = Vec::new();
        for subset in subsets {
            let mut content = file.durable.clone();
            for &i in &subset {
                apply_file(&mut content, &file.pending[i]);
            }
            states.push(content);
        }
        for (i, op) in file.pending.iter().enumerate() {
            if let FileOp::Write { offset, data } = op {
                let boundary = (offset / PAGE + 1) * PAGE;
                if boundary < offset + data.len() as u64 {
                    let mut content = file.durable.clone();
                    for earlier in &file.pending[..i] {
                        apply_file(&mut content, earlier);
                    }
                    let torn = FileOp::Write {
                        offset: *offset,
                        data: data[..(boundary - offset) as usize].to_vec(),
                    };
                    apply_file(&mut content, &torn);
                    states.push(content);
                }
            }
        }
        states
    }

    fn dir_states(&self) -> Vec<BTreeMap<String, u64>> {
        (0..=self.dir_pending.len())
            .map(|j| {
                let mut names = self.dir_durable.clone();
                for op in &self.dir_pending[..j] {
                    apply_dir(&mut names, op);
                }
                names
            })
            .collect()
    }

    /// Every state a crash now could leave: the files of the directory, by name, with
    /// their contents (at most `limit` per directory state).
    pub fn crash_states(&self, limit: usize) -> Vec<Vec<(String, Vec<u8>)>> {
        let mut all = Vec::new();
        for names in self.dir_states() {
            let mut combos: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new()];
            for (name, inode) in &names {
                let states = self.file_states(*inode);
                combos = combos
                    .iter()
                    .flat_map(|c| {
                        states.iter().map(move |s| {
                            let mut c = c.clone();
                            c.push((name.clone(), s.clone()));
                            c
                        })
                    })
                    .take(limit)
                    .collect();
            }
            all.extend(combos);
        }
        all
    }
}

/// Walks a record: after each operation that is not a marker, calls `check` with the
/// operation's index, the markers seen so far and every crash state at that point.
/// Returns how many states were checked.
pub fn walk(ops: &[Op], mut check: impl FnMut(usize, &[String], &[(String, Vec<u8>)])) -> usize {
    let mut model = Model::default();
    let mut marks = Vec::new();
    let mut checked = 0;
    for (k, op) in ops.iter().enumerate() {
        model.apply(op);
        if let Op::Mark(text) = op {
            marks.push(text.clone());
            continue;
        }
        for files in model.crash_states(512) {
            checked += 1;
            check(k, &marks, &files);
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_may_be_lost_torn_or_kept_and_renames_need_a_directory_sync() {
        let data = vec![7u8; 5000];
        let ops = [
            Op::Open {
                name: "a".into(),
                inode: 1,
                created: true,
            },
            Op::SyncDir,
            Op::Write {
                inode: 1,
                offset: 0,
                data: data.clone(),
            },
        ];
        let mut model = Model::default();
        ops.iter().for_each(|op| model.apply(op));
        let lens: Vec<usize> = model
            .crash_states(100)
            .iter()
            .map(|s| s[0].1.len())
            .collect();
        assert_eq!(lens, [0, 5000, 4096]);
        model.apply(&Op::Sync { inode: 1 });
        model.apply(&Op::Open {
            name: "b".into(),
            inode: 2,
            created: true,
        });
        model.apply(&Op::Sync { inode: 2 });
        model.apply(&Op::Rename {
            from: "b".into(),
            to: "a".into(),
        });
        let names: Vec<Vec<String>> = model
            .crash_states(100)
            .iter()
            .map(|s| s.iter().map(|(n, _)| n.clone()).collect())
            .collect();
        // Before the directory sync: only a; b created; b renamed over a.
        assert_eq!(names, [vec!["a"], vec!["a", "b"], vec!["a"]]);
        model.apply(&Op::SyncDir);
        assert_eq!(model.crash_states(100).len(), 1);
    }
}
