//! [`IndexReader`]: a memory-mapped index v2 file. See the module docs of
//! [`crate::tsdb::index`] for the layout and for what is checked when.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{ChunkMeta, IndexError, Toc, FORMAT_V2, HEADER_LEN, MAGIC, SERIES_ALIGN, TOC_LEN};
use crate::model::{Labels, Matcher};
use crate::tsdb::encoding::Cursor;

/// A series read from the index: its labels and chunk metas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesEntry {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// One label name of the postings offset table with every value (as a byte range of the map)
/// and the offset of its postings list.
#[derive(Debug)]
struct NameEntry {
    name: Box<str>,
    values: Vec<ValueEntry>,
}

#[derive(Debug, Clone, Copy)]
struct ValueEntry {
    start: usize,
    len: usize,
    postings: u64,
}

/// A read-only, memory-mapped index file.
pub struct IndexReader {
    path: PathBuf,
    map: Mmap,
    toc: Toc,
    /// `(start, len)` of every symbol in the map; all valid UTF-8 (checked on open).
    symbols: Vec<(usize, usize)>,
    /// Label names ascending ("" excluded), with their values ascending.
    names: Vec<NameEntry>,
    /// Offset of the all-postings list.
    all_postings: u64,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("path", &self.path)
            .field("toc", &self.toc)
            .field("symbols", &self.symbols.len())
            .field("names", &self.names.len())
            .finish()
    }
}

impl IndexReader {
    /// Map `path` and validate header, TOC, symbols, both offset tables and every label index.
    pub fn open(path: &Path) -> Result<IndexReader, IndexError> {
        let io = |op, source| IndexError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len < (HEADER_LEN + TOC_LEN) as u64 {
            return Err(IndexError::Corrupt {
                path: path.to_path_buf(),
                section: "header",
                offset: 0,
                reason: format!("file of {len} bytes is shorter than header and TOC"),
            });
        }
        // SAFETY: block files are immutable once written (blocks are written under a temporary
        // name and renamed into place; nothing writes to them afterwards). Every access is
        // bounds-checked against the mapped length.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io("map", e))?;
        let mut r = IndexReader {
            path: path.to_path_buf(),
            map,
            toc: Toc::default(),
            symbols: Vec::new(),
            names: Vec::new(),
            all_postings: 0,
        };
        r.read_header()?;
        r.read_toc()?;
        r.read_symbols()?;
        r.read_postings_table()?;
        r.check_label_indices()?;
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn toc(&self) -> Toc {
        self.toc
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    fn corrupt(&self, section: &'static str, offset: u64, reason: impl Into<String>) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            section,
            offset,
            reason: reason.into(),
        }
    }

    fn read_header(&self) -> Result<(), IndexError> {
        let mut c = Cursor::new(&self.map);
        let magic = c
            .be32()
            .ok_or_else(|| self.corrupt("header", 0, "truncated"))?;
        if magic != MAGIC {
            return Err(self.corrupt("header", 0, format!("invalid magic number {magic:#x}")));
        }
        let version = c
            .byte()
            .ok_or_else(|| self.corrupt("header", 4, "truncated"))?;
        if version != FORMAT_V2 {
            return Err(IndexError::UnsupportedVersion {
                path: self.path.clone(),
                version,
            });
        }
        Ok(())
    }

    fn read_toc(&mut self) -> Result<(), IndexError> {
        let start = self.map.len() - TOC_LEN;
        let b = self
            .map
            .get(start..)
            .ok_or_else(|| self.corrupt("TOC", start as u64, "truncated"))?;
        let (body, crc) = b.split_at(TOC_LEN - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(self.corrupt("TOC", start as u64, "checksum mismatch"));
        }
        let mut c = Cursor::new(body);
        let mut v = [0u64; 6];
        for (i, x) in v.iter_mut().enumerate() {
            *x = c.be64().unwrap_or(0);
            if *x < HEADER_LEN as u64 || *x > start as u64 {
                return Err(self.corrupt(
                    "TOC",
                    (start + 8 * i) as u64,
                    format!("section offset {x} outside the file"),
                ));
            }
        }
        let [symbols, series, label_indices, label_indices_table, postings, postings_table] = v;
        if !(symbols <= series
            && series <= label_indices
            && label_indices <= postings
            && postings <= label_indices_table
            && label_indices_table <= postings_table)
        {
            return Err(self.corrupt("TOC", start as u64, "section offsets out of order"));
        }
        self.toc = Toc {
            symbols,
            series,
            label_indices,
            label_indices_table,
            postings,
            postings_table,
        };
        Ok(())
    }

    /// The body of the length-prefixed, CRC-suffixed section at `off`, CRC verified.
    fn section(&self, section: &'static str, off: u64) -> Result<&[u8], IndexError> {
        let start = usize::try_from(off).map_err(|_| self.corrupt(section, off, "offset"))?;
        let mut c = Cursor::new(self.map.get(start..).unwrap_or_default());
        let len = c
            .be32()
            .ok_or_else(|| self.corrupt(section, off, "length runs past the end of the file"))?;
        let body = c.bytes(len as usize).ok_or_else(|| {
            self.corrupt(
                section,
                off,
                format!("length {len} runs past the end of the file"),
            )
        })?;
        let crc = c
            .bytes(4)
            .ok_or_else(|| self.corrupt(section, off, "checksum runs past the end of the file"))?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(self.corrupt(section, off, "checksum mismatch"));
        }
        Ok(body)
    }

    fn read_symbols(&mut self) -> Result<(), IndexError> {
        let off = self.toc.symbols;
        let body = self.section("symbols", off)?;
        let base = off as usize + 4;
        let mut c = Cursor::new(body);
        let bad = |c: &Cursor<'_>, why: &str| self.corrupt("symbols", (base + c.pos()) as u64, why);
        let count = c.be32().ok_or_else(|| bad(&c, "truncated count"))?;
        let mut symbols = Vec::with_capacity((count as usize).min(body.len()));
        let mut prev: Option<&[u8]> = None;
        for _ in 0..count {
            let pos = c.pos();
            let s = c
                .uvarint_bytes()
                .ok_or_else(|| bad(&c, "truncated symbol"))?;
            if std::str::from_utf8(s).is_err() {
                return Err(self.corrupt("symbols", (base + pos) as u64, "symbol is not UTF-8"));
            }
            if prev.is_some_and(|p| p >= s) {
                return Err(self.corrupt("symbols", (base + pos) as u64, "symbols not ascending"));
            }
            prev = Some(s);
            let start = base + c.pos() - s.len();
            symbols.push((start, s.len()));
        }
        if !c.is_empty() {
            return Err(bad(&c, "bytes after the last symbol"));
        }
        self.symbols = symbols;
        Ok(())
    }

    fn str_at(&self, start: usize, len: usize) -> &str {
        // Ranges come from checked parsing and were validated as UTF-8.
        self.map
            .get(start..start + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// The symbol with reference `r`.
    pub fn symbol(&self, r: u32) -> Option<&str> {
        let &(start, len) = self.symbols.get(r as usize)?;
        Some(self.str_at(start, len))
    }

    /// Every symbol, ascending.
    pub fn symbols(&self) -> impl Iterator<Item = &str> + '_ {
        self.symbols.iter().map(|&(s, l)| self.str_at(s, l))
    }

    fn read_postings_table(&mut self) -> Result<(), IndexError> {
        const SECTION: &str = "postings offset table";
        let off = self.toc.postings_table;
        let body = self.section(SECTION, off)?;
        let base = off as usize + 4;
        let mut c = Cursor::new(body);
        let bad = |pos: usize, why: String| self.corrupt(SECTION, (base + pos) as u64, why);
        let count = c.be32().ok_or_else(|| bad(0, "truncated count".into()))?;
        let mut names: Vec<NameEntry> = Vec::new();
        let mut all = None;
        let mut prev: Option<(&[u8], &[u8])> = None;
        for i in 0..count {
            let pos = c.pos();
            let keys = c
                .uvarint()
                .ok_or_else(|| bad(pos, "truncated entry".into()))?;
            if keys != 2 {
                return Err(bad(pos, format!("unexpected number of keys {keys}")));
            }
            let name = c.uvarint_bytes();
            let vpos = c.pos();
            let value = c.uvarint_bytes();
            let postings = c.uvarint();
            let (Some(name), Some(value), Some(postings)) = (name, value, postings) else {
                return Err(bad(pos, "truncated entry".into()));
            };
            let (Ok(name_s), Ok(_)) = (std::str::from_utf8(name), std::str::from_utf8(value))
            else {
                return Err(bad(pos, "label name or value is not UTF-8".into()));
            };
            if prev.is_some_and(|p| p >= (name, value)) {
                return Err(bad(pos, "entries not in (name, value) order".into()));
            }
            prev = Some((name, value));
            if postings < self.toc.postings || postings >= self.toc.label_indices_table {
                return Err(bad(
                    pos,
                    format!("postings offset {postings} outside the postings"),
                ));
            }
            if i == 0 {
                if !name.is_empty() || !value.is_empty() {
                    return Err(bad(pos, "first entry is not the all-postings key".into()));
                }
                all = Some(postings);
                continue;
            }
            if name.is_empty() {
                return Err(bad(pos, "empty label name".into()));
            }
            // `value` starts after its uvarint length.
            let vstart = base + vpos + crate::tsdb::encoding::uvarint_len(value.len() as u64);
            let entry = ValueEntry {
                start: vstart,
                len: value.len(),
                postings,
            };
            match names.last_mut() {
                Some(n) if *n.name == *name_s => n.values.push(entry),
                _ => names.push(NameEntry {
                    name: name_s.into(),
                    values: vec![entry],
                }),
            }
        }
        if !c.is_empty() {
            return Err(bad(c.pos(), "bytes after the last entry".into()));
        }
        self.all_postings = all.ok_or_else(|| bad(0, "no all-postings entry".into()))?;
        self.names = names;
        Ok(())
    }

    /// Label indices are not used for reading (as in Prometheus 2.42), but their table and
    /// lists are checked so that no byte of the file escapes a checksum.
    fn check_label_indices(&self) -> Result<(), IndexError> {
        const SECTION: &str = "label offset table";
        let off = self.toc.label_indices_table;
        let body = self.section(SECTION, off)?;
        let base = off as usize + 4;
        let mut c = Cursor::new(body);
        let bad = |pos: usize, why: String| self.corrupt(SECTION, (base + pos) as u64, why);
        let count = c.be32().ok_or_else(|| bad(0, "truncated count".into()))?;
        for _ in 0..count {
            let pos = c.pos();
            let keys = c.uvarint();
            let name = c.uvarint_bytes();
            let li = c.uvarint();
            let (Some(1), Some(_), Some(li)) = (keys, name, li) else {
                return Err(bad(pos, "malformed entry".into()));
            };
            if li < self.toc.label_indices || li >= self.toc.postings {
                return Err(bad(
                    pos,
                    format!("label index offset {li} outside label indices"),
                ));
            }
            let idx = self.section("label index", li)?;
            let mut d = Cursor::new(idx);
            let (Some(1), Some(n)) = (d.be32(), d.be32()) else {
                return Err(self.corrupt("label index", li, "malformed header"));
            };
            if d.remaining() != 4 * n as usize {
                return Err(self.corrupt("label index", li, "length does not match count"));
            }
            for _ in 0..n {
                let v = d.be32().unwrap_or(u32::MAX);
                if v as usize >= self.symbols.len() {
                    return Err(self.corrupt("label index", li, format!("unknown symbol {v}")));
                }
            }
        }
        if !c.is_empty() {
            return Err(bad(c.pos(), "bytes after the last entry".into()));
        }
        Ok(())
    }

    /// Label names, ascending.
    pub fn label_names(&self) -> Vec<&str> {
        self.names.iter().map(|n| &*n.name).collect()
    }

    fn name_entry(&self, name: &str) -> Option<&NameEntry> {
        self.names
            .binary_search_by(|n| (*n.name).cmp(name))
            .ok()
            .and_then(|i| self.names.get(i))
    }

    /// Values of `name`, ascending (empty if the name is unknown).
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        self.name_entry(name)
            .map(|n| {
                n.values
                    .iter()
                    .map(|v| self.str_at(v.start, v.len))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn read_postings(&self, off: u64) -> Result<Vec<u32>, IndexError> {
        let body = self.section("postings", off)?;
        let mut c = Cursor::new(body);
        let n = c
            .be32()
            .ok_or_else(|| self.corrupt("postings", off, "truncated count"))?;
        if c.remaining() != 4 * n as usize {
            return Err(self.corrupt("postings", off, "length does not match count"));
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = c.be32().unwrap_or(0);
            if out.last().is_some_and(|&l| l >= id) {
                return Err(self.corrupt("postings", off, "series IDs not ascending"));
            }
            out.push(id);
        }
        Ok(out)
    }

    /// Every series ID, ascending (the all-postings list).
    pub fn all_postings(&self) -> Result<Vec<u32>, IndexError> {
        self.read_postings(self.all_postings)
    }

    /// Series IDs with label `name="value"`, ascending (empty if there are none).
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, IndexError> {
        let Some(n) = self.name_entry(name) else {
            return Ok(Vec::new());
        };
        match n
            .values
            .binary_search_by(|v| self.str_at(v.start, v.len).cmp(value))
        {
            Ok(i) => match n.values.get(i) {
                Some(v) => self.read_postings(v.postings),
                None => Ok(Vec::new()),
            },
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Union of the postings of every value of `name` for which `pred` holds.
    fn postings_where(
        &self,
        name: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Vec<u32>, IndexError> {
        let Some(n) = self.name_entry(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut lists = 0;
        for v in &n.values {
            if pred(self.str_at(v.start, v.len)) {
                out.extend(self.read_postings(v.postings)?);
                lists += 1;
            }
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Ok(out)
    }

    /// Series matching every matcher, ascending — Prometheus's `PostingsForMatchers`: a
    /// matcher that matches `""` also selects series without the label, so it is applied by
    /// removing the series whose value fails it; the others intersect. Only matchers that all
    /// match `""` (or none at all) start from every series.
    pub fn postings_for_matchers(&self, matchers: &[Matcher]) -> Result<Vec<u32>, IndexError> {
        crate::tsdb::postings::for_matchers(self, matchers)
    }

    /// The labels and chunk metas of series `id`.
    pub fn series(&self, id: u32) -> Result<SeriesEntry, IndexError> {
        const SECTION: &str = "series";
        let off = u64::from(id) * SERIES_ALIGN;
        if off < self.toc.series || off >= self.toc.label_indices {
            return Err(IndexError::NoSuchSeries {
                path: self.path.clone(),
                id,
            });
        }
        let start = off as usize;
        let mut c = Cursor::new(self.map.get(start..).unwrap_or_default());
        let len = c
            .uvarint()
            .ok_or_else(|| self.corrupt(SECTION, off, "truncated length"))?;
        let body_start = c.pos();
        let body = usize::try_from(len)
            .ok()
            .and_then(|l| c.bytes(l))
            .ok_or_else(|| self.corrupt(SECTION, off, format!("length {len} runs past the end")))?;
        let crc = c
            .bytes(4)
            .ok_or_else(|| self.corrupt(SECTION, off, "checksum runs past the end"))?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(self.corrupt(SECTION, off, "checksum mismatch"));
        }
        let base = off + body_start as u64;
        let mut d = Cursor::new(body);
        let bad = |d: &Cursor<'_>, why: String| self.corrupt(SECTION, base + d.pos() as u64, why);

        let nlabels = d.uvarint().ok_or_else(|| bad(&d, "truncated".into()))?;
        if nlabels > (body.len() / 2) as u64 {
            return Err(bad(&d, format!("{nlabels} labels in {} bytes", body.len())));
        }
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(nlabels as usize);
        for _ in 0..nlabels {
            let (Some(nr), Some(vr)) = (d.uvarint32(), d.uvarint32()) else {
                return Err(bad(&d, "truncated label".into()));
            };
            let (Some(n), Some(v)) = (self.symbol(nr), self.symbol(vr)) else {
                return Err(bad(&d, format!("unknown symbol in label ({nr}, {vr})")));
            };
            if n.is_empty() || pairs.last().is_some_and(|&(p, _)| p >= n) {
                return Err(bad(&d, "label names empty or not ascending".into()));
            }
            pairs.push((n, v));
        }
        let nchunks = d.uvarint().ok_or_else(|| bad(&d, "truncated".into()))?;
        if nchunks > (d.remaining() / 3) as u64 {
            return Err(bad(
                &d,
                format!("{nchunks} chunks in {} bytes", d.remaining()),
            ));
        }
        let mut chunks = Vec::with_capacity(nchunks as usize);
        let mut prev: Option<ChunkMeta> = None;
        for _ in 0..nchunks {
            let m = match prev {
                None => {
                    let (Some(mint), Some(dt), Some(cref)) = (d.varint(), d.uvarint(), d.uvarint())
                    else {
                        return Err(bad(&d, "truncated chunk meta".into()));
                    };
                    ChunkMeta {
                        mint,
                        maxt: mint.wrapping_add(dt as i64),
                        cref,
                    }
                }
                Some(p) => {
                    let (Some(dmin), Some(dt), Some(dref)) = (d.uvarint(), d.uvarint(), d.varint())
                    else {
                        return Err(bad(&d, "truncated chunk meta".into()));
                    };
                    let mint = p.maxt.wrapping_add(dmin as i64);
                    let cref = (p.cref as i64).wrapping_add(dref) as u64;
                    if cref < p.cref {
                        return Err(bad(&d, "chunk references not ascending".into()));
                    }
                    ChunkMeta {
                        mint,
                        maxt: mint.wrapping_add(dt as i64),
                        cref,
                    }
                }
            };
            if m.maxt < m.mint {
                return Err(bad(
                    &d,
                    format!("chunk maxt {} before mint {}", m.maxt, m.mint),
                ));
            }
            chunks.push(m);
            prev = Some(m);
        }
        if !d.is_empty() {
            return Err(bad(&d, "bytes after the last chunk".into()));
        }
        Ok(SeriesEntry {
            labels: Labels::from_sorted_pairs(pairs),
            chunks,
        })
    }
}

impl crate::tsdb::postings::PostingsSource for IndexReader {
    type Id = u32;
    type Error = IndexError;
    fn exact(&self, name: &str, value: &str) -> Result<Vec<u32>, IndexError> {
        self.postings(name, value)
    }
    fn matching(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Result<Vec<u32>, IndexError> {
        self.postings_where(name, pred)
    }
    fn all(&self) -> Result<Vec<u32>, IndexError> {
        self.all_postings()
    }
}
