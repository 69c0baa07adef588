//! The directory walk of a scan: counts video files below an open directory, within a budget
//! of entries and time, never leaving that directory.
//!
//! The walk holds a handle of the scanned directory (opened when the request was checked, see
//! `open_target`) and opens every subdirectory relative to it with `cap-std`, which refuses
//! any path that resolves outside the handle's tree (openat2 `RESOLVE_BENEATH` where the
//! kernel has it, a checked component-by-component walk otherwise); the last component is
//! opened without following a symlink. So a symlink, or a directory swapped for one while the
//! walk runs, cannot lead it anywhere else. Symlinks are neither followed nor counted, to
//! directories or to files. A subdirectory that cannot be opened or read is skipped.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, DirEntry, FileType};

/// Video files are recognised by these extensions, compared without case (PROTOCOL.md §5).
pub const VIDEO_EXTENSIONS: [&str; 13] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "wmv", "flv", "mpg", "mpeg", "ts", "mts", "m2ts",
];

/// How much one walk may do: directory entries read, and time.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    max_entries: u64,
    entries: u64,
    timeout: Duration,
    /// `None`: a timeout too large to count from now (as good as none).
    deadline: Option<Instant>,
}

/// Why a walk stopped without a count.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// The scanned directory itself could not be read.
    Io(io::Error),
    /// The walk read more directory entries than its budget allows (`--scan-max-entries`).
    TooManyEntries(u64),
    /// The walk took longer than its budget allows (`--scan-timeout`).
    TimedOut(Duration),
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // io errors from cap-std name no path.
            WalkError::Io(e) => write!(f, "{e}"),
            WalkError::TooManyEntries(max) => write!(
                f,
                "the directory has more than {max} entries, the limit of one scan \
                 (--scan-max-entries)"
            ),
            WalkError::TimedOut(limit) => write!(
                f,
                "the scan took longer than {}, the limit of one scan (--scan-timeout)",
                humantime::format_duration(*limit)
            ),
        }
    }
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> WalkError {
        WalkError::Io(e)
    }
}

impl Budget {
    /// At most `max_entries` directory entries, and until `timeout` after `now`.
    pub(crate) fn new(max_entries: u64, timeout: Duration, now: Instant) -> Budget {
        Budget {
            max_entries,
            entries: 0,
            timeout,
            deadline: now.checked_add(timeout),
        }
    }

    /// Counts one directory entry; fails once the budget is spent.
    fn take(&mut self) -> Result<(), WalkError> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(WalkError::TooManyEntries(self.max_entries));
        }
        self.check_time()
    }

    fn check_time(&self) -> Result<(), WalkError> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(WalkError::TimedOut(self.timeout));
        }
        Ok(())
    }
}

/// Counts the video files in `dir` (and below, if `recursive`). Calls `progress` with the
/// share of `dir`'s own entries done, at most once per 10 %, never with 1.0. Fails when `dir`
/// itself cannot be read or the budget runs out.
pub(crate) fn count_videos(
    dir: &Dir,
    recursive: bool,
    budget: &mut Budget,
    mut progress: impl FnMut(f64),
) -> Result<u64, WalkError> {
    let total = count_entries(dir, budget)?;
    let mut count = 0;
    let mut reported = 0.0;
    for (done, entry) in dir.entries()?.enumerate() {
        let entry = entry?;
        budget.take()?;
        let name = entry.file_name();
        match kind(dir, &entry) {
            Some(kind) if kind.is_dir() && recursive => {
                count += count_tree(dir, PathBuf::from(&name), budget)?;
            }
            Some(kind) if kind.is_file() && is_video_name(&name) => count += 1,
            _ => {}
        }
        // The directory may have grown since it was counted: the share stays below 1.
        let share = (done + 1) as f64 / total.max(done + 1) as f64;
        if share < 1.0 && share - reported >= 0.1 {
            reported = share;
            progress(share);
        }
    }
    Ok(count)
}

/// How many entries `dir` has, for progress. More than the whole budget fails at once (the
/// walk would fail when it got there), without holding the entries in memory.
fn count_entries(dir: &Dir, budget: &Budget) -> Result<usize, WalkError> {
    let mut total: u64 = 0;
    for entry in dir.entries()? {
        entry?;
        total += 1;
        if total > budget.max_entries {
            return Err(WalkError::TooManyEntries(budget.max_entries));
        }
        budget.check_time()?;
    }
    Ok(usize::try_from(total).unwrap_or(usize::MAX))
}

/// Counts the video files below `top` (relative to `base`), depth first, skipping what cannot
/// be opened or read. Only the budget stops it.
fn count_tree(base: &Dir, top: PathBuf, budget: &mut Budget) -> Result<u64, WalkError> {
    let mut count = 0;
    // Paths relative to `base`, not open handles: a wide tree must not hold a descriptor per
    // pending directory. Bounded by the entry budget.
    let mut pending = vec![top];
    while let Some(relative) = pending.pop() {
        let Some(entries) = base
            .open_dir_nofollow(&relative)
            .and_then(|dir| dir.entries().map(|entries| (dir, entries)))
            .inspect_err(|e| tracing::debug!(error = %e, "scan skipped a directory"))
            .ok()
        else {
            continue;
        };
        let (dir, entries) = entries;
        for entry in entries.flatten() {
            budget.take()?;
            let name = entry.file_name();
            match kind(&dir, &entry) {
                Some(kind) if kind.is_dir() => pending.push(relative.join(&name)),
                Some(kind) if kind.is_file() && is_video_name(&name) => count += 1,
                _ => {}
            }
        }
    }
    Ok(count)
}

/// The entry's own type (a symlink is a symlink), asking the filesystem when the directory
/// listing does not tell.
fn kind(dir: &Dir, entry: &DirEntry) -> Option<FileType> {
    match entry.file_type() {
        Ok(kind) if kind.is_dir() || kind.is_file() || kind.is_symlink() => Some(kind),
        _ => dir
            .symlink_metadata(entry.file_name())
            .ok()
            .map(|m| m.file_type()),
    }
}

/// A name with a video extension.
fn is_video_name(name: &OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(ext)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn open(path: &Path) -> Dir {
        Dir::open_ambient_dir(path, ambient_authority()).unwrap()
    }

    fn unlimited() -> Budget {
        // A timeout too large to add to now is no deadline, not a panic.
        Budget::new(u64::MAX, Duration::MAX, Instant::now())
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in ["a.mp4", "B.MKV", "notes.txt", "clip.m2ts", "noext"] {
            std::fs::write(root.join(file), b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/c.webm"), b"x").unwrap();
        std::fs::write(root.join("sub/deeper/d.ts"), b"x").unwrap();
        std::fs::create_dir(root.join("folder.mp4")).unwrap(); // a directory is not a video
        dir
    }

    #[test]
    fn counts_video_files_by_extension() {
        let dir = tree();
        let handle = open(dir.path());
        assert_eq!(
            count_videos(&handle, false, &mut unlimited(), |_| {}).unwrap(),
            3
        );
        let mut reports = Vec::new();
        assert_eq!(
            count_videos(&handle, true, &mut unlimited(), |p| reports.push(p)).unwrap(),
            5
        );
        assert!(reports.windows(2).all(|w| w[0] < w[1]), "{reports:?}");
        assert!(reports.iter().all(|p| *p > 0.0 && *p < 1.0), "{reports:?}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_neither_followed_nor_counted() {
        let outside = tree();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("own.mp4"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("a.mp4"), dir.path().join("out.mp4"))
            .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub/deep-out")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("sub/loop")).unwrap();
        let handle = open(dir.path());
        assert_eq!(
            count_videos(&handle, true, &mut unlimited(), |_| {}).unwrap(),
            1
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_swapped_for_a_symlink_after_opening_is_not_followed() {
        let outside = tree();
        let root = tempfile::tempdir().unwrap();
        let scanned = root.path().join("videos");
        std::fs::create_dir(&scanned).unwrap();
        std::fs::write(scanned.join("mine.mp4"), b"x").unwrap();
        let handle = open(&scanned);
        // Between the check and the walk, the directory is moved away and a symlink to the
        // outside takes its place: the walk still reads the directory that was checked.
        std::fs::rename(&scanned, root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &scanned).unwrap();
        assert_eq!(
            count_videos(&handle, true, &mut unlimited(), |_| {}).unwrap(),
            1
        );
    }

    #[test]
    fn the_entry_budget_stops_the_walk() {
        let dir = tree(); // 7 entries at the top, 3 below
        let handle = open(dir.path());
        let mut tight = Budget::new(9, Duration::from_secs(3600), Instant::now());
        let err = count_videos(&handle, true, &mut tight, |_| {}).unwrap_err();
        assert!(matches!(err, WalkError::TooManyEntries(9)), "{err:?}");
        assert!(err.to_string().contains("--scan-max-entries"), "{err}");
        let mut exact = Budget::new(10, Duration::from_secs(3600), Instant::now());
        assert_eq!(count_videos(&handle, true, &mut exact, |_| {}).unwrap(), 5);
        // A top directory larger than the budget fails before the walk starts.
        let mut small = Budget::new(3, Duration::from_secs(3600), Instant::now());
        let mut reports = 0;
        assert!(count_videos(&handle, true, &mut small, |_| reports += 1).is_err());
        assert_eq!(reports, 0);
    }

    #[test]
    fn the_time_budget_stops_the_walk() {
        let dir = tree();
        let handle = open(dir.path());
        let started = Instant::now();
        let mut spent = Budget::new(u64::MAX, Duration::from_millis(250), started);
        spent.deadline = Some(started); // as if the walk had already taken its time
        let err = count_videos(&handle, true, &mut spent, |_| {}).unwrap_err();
        assert!(matches!(err, WalkError::TimedOut(_)), "{err:?}");
        assert!(
            err.to_string().contains("250ms") && err.to_string().contains("--scan-timeout"),
            "{err}"
        );
    }
}
