//! What a fresh clone's HEAD is — its commit, author and subject — read from the
//! repository's files instead of from a `git log` process: a checkout is most of the
//! time between a push and the first task, and a process costs more than the read.
//!
//! Only the plain case is read here: HEAD (or the branch it names, loose or in
//! `packed-refs`) is a SHA-1, and its commit is a loose object or a whole (not
//! deltified) object in a pack, as the one commit of a depth-1 clone is, with no
//! `encoding` header (git would re-encode the message). Anything else answers `None`,
//! and the caller asks git, which stays the authority: the tests compare every answer
//! given here with `git log`'s.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A commit object larger than this is left to git.
const MAX_COMMIT: u64 = 1 << 20;

/// `(commit, "author <email>", subject)`, as `git log -1 --format=%H%n%an <%ae>%n%s`.
pub(crate) type Head = (String, String, String);

/// HEAD of the repository whose `.git` is in `work_tree`, or `None` when it is not the
/// plain case (see the module documentation).
pub(crate) fn read(work_tree: &Path) -> Option<Head> {
    let git = work_tree.join(".git");
    let commit = head_commit(&git)?;
    let raw = object(&git, &commit)?;
    let (author, subject) = parse_commit(&raw)?;
    Some((commit, author, subject))
}

fn is_sha1(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn head_commit(git: &Path) -> Option<String> {
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim_end();
    let Some(name) = head.strip_prefix("ref: ") else {
        return is_sha1(head).then(|| head.to_owned());
    };
    if !name.starts_with("refs/") || name.split('/').any(|part| part.is_empty() || part == "..") {
        return None;
    }
    if let Ok(loose) = std::fs::read_to_string(git.join(name)) {
        let loose = loose.trim_end();
        return is_sha1(loose).then(|| loose.to_owned());
    }
    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (sha, reference) = line.split_once(' ')?;
        (reference == name && is_sha1(sha)).then(|| sha.to_owned())
    })
}

/// The commit object's content (after its `commit <size>\0` header).
fn object(git: &Path, sha: &str) -> Option<Vec<u8>> {
    let objects = git.join("objects");
    let loose = objects.join(&sha[..2]).join(&sha[2..]);
    if let Ok(file) = File::open(&loose) {
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(file).take(MAX_COMMIT + 64).read_to_end(&mut raw).ok()?;
        let nul = raw.iter().position(|&b| b == 0)?;
        let header = std::str::from_utf8(&raw[..nul]).ok()?;
        let size: usize = header.strip_prefix("commit ")?.parse().ok()?;
        let content = raw.split_off(nul + 1);
        return (content.len() == size).then_some(content);
    }
    let id = decode_hex(sha)?;
    for entry in std::fs::read_dir(objects.join("pack")).ok()? {
        let path = entry.ok()?.path();
        if path.extension().is_some_and(|e| e == "idx")
            && let Some(offset) = pack_offset(&path, &id)
        {
            return packed_commit(&path.with_extension("pack"), offset);
        }
    }
    None
}

fn decode_hex(sha: &str) -> Option<[u8; 20]> {
    let mut id = [0u8; 20];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(sha.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The object's offset in the pack, from a version 2 pack index: a fan-out table of
/// 256 counts, the sorted names, their CRCs, then 4-byte offsets (the high bit points
/// into a table of 8-byte ones).
fn pack_offset(idx: &Path, id: &[u8; 20]) -> Option<u64> {
    let data = std::fs::read(idx).ok()?;
    let u32_at = |at: usize| data.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if data.get(..8)? != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return None;
    }
    let fanout = |i: usize| u32_at(8 + 4 * i).map(|n| n as usize);
    let count = fanout(255)?;
    let first = usize::from(id[0]);
    let (mut low, mut high) = (if first == 0 { 0 } else { fanout(first - 1)? }, fanout(first)?);
    let names = 8 + 256 * 4;
    while low < high {
        let mid = (low + high) / 2;
        let name = data.get(names + 20 * mid..names + 20 * mid + 20)?;
        match name.cmp(id.as_slice()) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => {
                let offsets = names + 20 * count + 4 * count;
                let small = u32_at(offsets + 4 * mid)?;
                if small & 0x8000_0000 == 0 {
                    return Some(u64::from(small));
                }
                let large = offsets + 4 * count + 8 * (small & 0x7fff_ffff) as usize;
                let bytes: [u8; 8] = data.get(large..large + 8)?.try_into().ok()?;
                return Some(u64::from_be_bytes(bytes));
            }
        }
    }
    None
}

/// A whole commit object at `offset` of a pack: a type-and-size header, then the
/// zlib-compressed content. A deltified object (types 6 and 7) is left to git.
fn packed_commit(pack: &Path, offset: u64) -> Option<Vec<u8>> {
    const COMMIT: u8 = 1;
    let mut file = File::open(pack).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut byte = [0u8; 1];
    file.read_exact(&mut byte).ok()?;
    if (byte[0] >> 4) & 0x7 != COMMIT {
        return None;
    }
    let mut size = u64::from(byte[0] & 0x0f);
    let mut shift = 4;
    while byte[0] & 0x80 != 0 {
        file.read_exact(&mut byte).ok()?;
        if shift > 57 {
            return None;
        }
        size |= u64::from(byte[0] & 0x7f) << shift;
        shift += 7;
    }
    if size > MAX_COMMIT {
        return None;
    }
    let mut content = Vec::with_capacity(size as usize);
    flate2::read::ZlibDecoder::new(file).take(size + 1).read_to_end(&mut content).ok()?;
    (content.len() as u64 == size).then_some(content)
}

/// `("author <email>", subject)` of a commit object's content, as git's `%an <%ae>`
/// and `%s` show them: the subject is the message's first paragraph (after any blank
/// lines), its lines without trailing whitespace, joined by spaces.
fn parse_commit(raw: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let (headers, message) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut author = None;
    for line in headers.lines() {
        if line.starts_with("encoding ") {
            return None;
        }
        if let Some(ident) = line.strip_prefix("author ")
            && author.is_none()
        {
            let (name, rest) = ident.split_once('<')?;
            let (email, _) = rest.split_once('>')?;
            author = Some(format!("{} <{email}>", name.trim_end_matches(is_space)));
        }
    }
    let subject: Vec<&str> = message
        .split('\n')
        .map(|line| line.trim_end_matches(is_space))
        .skip_while(|line| line.is_empty())
        .take_while(|line| !line.is_empty())
        .collect();
    Some((author?, subject.join(" ")))
}

/// C's `isspace` in the C locale, which git trims by.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Zoë Ångström  ", "-c", "user.email=zoe@example.com", "-c", "gc.auto=0"])
            .args(args)
            .current_dir(dir)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What `git log` says of HEAD, the authority this module stands in for.
    fn git_says(dir: &Path) -> Head {
        let out = git(dir, &["log", "-1", "--format=%H%n%an <%ae>%n%s", "HEAD", "--"]);
        let mut lines = out.lines().map(str::to_owned);
        (lines.next().unwrap(), lines.next().unwrap_or_default(), lines.next().unwrap_or_default())
    }

    fn commit(dir: &Path, message: &str) {
        std::fs::write(dir.join("msg"), message).unwrap();
        std::fs::write(dir.join("file"), message).unwrap();
        git(dir, &["add", "file"]);
        git(dir, &["commit", "-q", "--cleanup=verbatim", "-F", "msg"]);
    }

    const MESSAGES: [&str; 5] = [
        "one line",
        "\n\n  first line  \nsecond line\t\n\nbody\n",
        "üñíçødé subject\r\n\r\nbody",
        "trailing spaces   \n",
        "a\nb\nc\n\n\nd",
    ];

    #[test]
    fn loose_packed_and_cloned_heads_read_as_git_log_shows_them() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        for message in MESSAGES {
            commit(&work, message);
            // Loose objects, loose ref.
            assert_eq!(read(&work), Some(git_says(&work)), "loose, message {message:?}");
            // A shallow clone: the commit in a pack, the branch a loose ref.
            let clone = tmp.path().join("clone");
            let _ = std::fs::remove_dir_all(&clone);
            let url = format!("file://{}", work.display());
            git(tmp.path(), &["clone", "-q", "--depth", "1", "--branch", "main", &url, "clone"]);
            assert_eq!(read(&clone), Some(git_says(&clone)), "clone, message {message:?}");
        }
        // Every object packed, the branch only in packed-refs.
        git(&work, &["gc", "-q", "--prune=now"]);
        assert!(!work.join(".git/refs/heads/main").exists());
        let packed = read(&work);
        assert!(packed.is_none() || packed == Some(git_says(&work)), "{packed:?}");
        // A detached HEAD.
        let first = git(&work, &["rev-list", "--max-parents=0", "HEAD"]);
        git(&work, &["checkout", "-q", "--detach", first.trim()]);
        let detached = read(&work);
        assert!(detached.is_none() || detached == Some(git_says(&work)), "{detached:?}");
    }

    #[test]
    fn what_git_must_say_is_left_to_git() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "-q", "-b", "main"]);
        assert_eq!(read(dir), None, "an empty repository has no HEAD commit");
        std::fs::write(dir.join("file"), "x").unwrap();
        git(dir, &["add", "file"]);
        git(dir, &["-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "-m", "latin"]);
        assert_eq!(read(dir), None, "a message git would re-encode");
        std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/../../etc\n").unwrap();
        assert_eq!(read(dir), None, "a ref outside refs/");
        std::fs::write(dir.join(".git/HEAD"), "not a sha\n").unwrap();
        assert_eq!(read(dir), None);
        assert_eq!(read(&dir.join("nowhere")), None);
    }

    #[test]
    fn a_damaged_pack_index_is_no_answer_rather_than_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let idx = tmp.path().join("pack-x.idx");
        let id = [0xab; 20];
        for data in [Vec::new(), vec![0xff, b't', b'O', b'c', 0, 0, 0, 2], {
            let mut d = vec![0xff, b't', b'O', b'c', 0, 0, 0, 2];
            d.extend(std::iter::repeat_n(0xff, 256 * 4));
            d
        }] {
            std::fs::write(&idx, &data).unwrap();
            assert_eq!(pack_offset(&idx, &id), None);
        }
        let pack = tmp.path().join("pack-x.pack");
        std::fs::write(&pack, [0x9f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).unwrap();
        assert_eq!(packed_commit(&pack, 0), None);
        assert_eq!(packed_commit(&pack, 99), None);
    }
}
