//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to find
//! where a struct member lives in this kernel: the eBPF programs read the
//! connecting process's executable through kernel pointers, and aya's
//! programs have no CO-RE relocations, so the agent computes the offsets at
//! load and hands them over in the programs' config.
//!
//! The format (Documentation/bpf/btf.rst): a header, then type records (a
//! 12-byte `btf_type` and kind-specific data), then the string section.
//! Type ids count from 1 in record order.

use std::collections::HashMap;

/// Why BTF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file can't be read.
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    /// It is not BTF, or is cut short.
    #[error("{0} is not valid BTF ({1})")]
    Invalid(String, &'static str),
}

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// One type record: what member lookups need.
#[derive(Debug, Clone, Copy)]
struct Type {
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// The size, or the type referred to (typedef, const, …).
    size_or_type: u32,
    /// Where its kind-specific data starts, in `types`.
    data: usize,
}

/// The parsed type section.
#[derive(Debug)]
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// By id (index 0 is the void type, never looked at).
    records: Vec<Type>,
    structs: HashMap<String, u32>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn kernel() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| BtfError::Read(path.to_owned(), e))?;
        Self::parse(&data).map_err(|why| BtfError::Invalid(path.to_owned(), why))
    }

    /// Parses raw BTF.
    pub fn parse(data: &[u8]) -> Result<Self, &'static str> {
        let u16_at = |at: usize| {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err("bad magic (not little-endian BTF)");
        }
        let header = |i: usize| u32_at(8 + 4 * i).map(|v| v as usize).ok_or("short header");
        let hdr_len = u32_at(4).ok_or("short header")? as usize;
        if hdr_len < HEADER_LEN {
            return Err("short header");
        }
        let (type_off, type_len, str_off, str_len) =
            (header(0)?, header(1)?, header(2)?, header(3)?);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or("type section out of bounds")?;
        let strings = section(str_off, str_len).ok_or("string section out of bounds")?;
        let mut btf = Btf {
            types: types.to_vec(),
            strings: strings.to_vec(),
            records: vec![Type {
                kind: 0,
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
                data: 0,
            }],
            structs: HashMap::new(),
        };
        let mut at = 0;
        while at < btf.types.len() {
            let word = |i: usize| btf.u32(at + 4 * i).ok_or("type record cut short");
            let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = extra_len(kind, vlen).ok_or("unknown type kind")?;
            let record = Type {
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                data: at + 12,
            };
            at = at + 12 + extra;
            if at > btf.types.len() {
                return Err("type record cut short");
            }
            let id = btf.records.len() as u32;
            btf.records.push(record);
            if kind == KIND_STRUCT
                && let Some(name) = btf.string(name_off).filter(|n| !n.is_empty())
            {
                btf.structs.entry(name.to_owned()).or_insert(id);
            }
        }
        Ok(btf)
    }

    fn u32(&self, at: usize) -> Option<u32> {
        self.types
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// The byte offset of `member` in `struct name`, looking into anonymous
    /// structs and unions (`mm_struct.exe_file` sits inside one).
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = *self.structs.get(name)?;
        self.find_member(id, member, 0, 0)
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32, depth: u8) -> Option<u32> {
        let record = *self.records.get(id as usize)?;
        if !matches!(record.kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        for i in 0..record.vlen as usize {
            let at = record.data + 12 * i;
            let (name_off, type_id, offset) = (self.u32(at)?, self.u32(at + 4)?, self.u32(at + 8)?);
            // With kind_flag, the low 24 bits are the offset (bitfields).
            let bits = base_bits
                + if record.kind_flag {
                    offset & 0x00ff_ffff
                } else {
                    offset
                };
            let name = self.string(name_off)?;
            if name == member {
                return bits.is_multiple_of(8).then_some(bits / 8);
            }
            if name.is_empty()
                && let Some(found) =
                    self.find_member(self.resolve(type_id), member, bits, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.records.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type;
                }
                _ => break,
            }
        }
        id
    }
}

/// The bytes of kind-specific data after a type record's 12 bytes.
fn extra_len(kind: u32, vlen: u32) -> Option<usize> {
    let vlen = vlen as usize;
    Some(match kind {
        // INT, VAR, DECL_TAG: one word.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // ARRAY.
        3 => 12,
        // STRUCT, UNION (members), DATASEC (var_secinfo), ENUM64.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO.
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct outer { int a; struct { long pad; void *x; }; }`
    /// (an anonymous member), built the way the kernel lays it out.
    fn blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0x\0int\0pad\0long\0".to_vec();
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut record = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // [1] int (INT, size 4, encoding word).
        record(&[name("int"), 1 << 24, 4, 32]);
        // [2] long.
        record(&[name("long"), 1 << 24, 8, 64]);
        // [3] void * (PTR to 0).
        record(&[0, 2 << 24, 0]);
        // [4] anonymous struct { long pad; void *x; }.
        record(&[0, (4 << 24) | 2, 16, name("pad"), 2, 0, name("x"), 3, 64]);
        // [5] struct outer { int a; <anon> at bit 64; }.
        record(&[name("outer"), (4 << 24) | 2, 24, name("a"), 1, 0, 0, 4, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            HEADER_LEN as u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_also_inside_anonymous_structs() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "x"), Some(16), "8 + 8 bytes in");
        assert_eq!(btf.member_offset("outer", "nope"), None);
        assert_eq!(btf.member_offset("inner", "x"), None);
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut cut = blob();
        cut.truncate(cut.len() - 30);
        assert!(Btf::parse(&cut).is_err());
    }

    /// The running kernel's layout has every member the programs read.
    #[test]
    #[cfg_attr(
        not(feature = "root-tests"),
        ignore = "reads this kernel's BTF: `cargo xtask test` runs it as root"
    )]
    fn this_kernel_has_what_the_programs_read() {
        let btf = Btf::kernel().unwrap();
        for (name, member) in [
            ("task_struct", "mm"),
            ("mm_struct", "exe_file"),
            ("file", "f_inode"),
            ("inode", "i_ino"),
            ("inode", "i_sb"),
            ("super_block", "s_dev"),
        ] {
            assert!(btf.member_offset(name, member).is_some(), "{name}.{member}");
        }
        assert!(btf.member_offset("mm_struct", "exe_file").unwrap() > 0);
    }
}
