//! THE field table: the single source of truth for every flow field the collector knows.
//!
//! One row per NetFlow v9 / IPFIX information element (or per virtual field). The decoder reads
//! it to decide which template fields land in a [`crate::flow::Flow`] slot, the dump printer
//! reads the labels, and the filter compiler and export writer (later stages) read the filter
//! names, sides and kinds. Nothing else in the crate lists fields: add a row here and every stage
//! knows the field.
//!
//! Rows in the `info` part are known by label only (shown by `dump-flows`) and are not stored in
//! a flow, which keeps the per-flow work proportional to what filters and windows can use.

/// How a field's value is stored (as a `u128` in a flow slot) and printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// IPv4 address, stored in the low 32 bits.
    Ipv4,
    /// IPv6 address, stored as the 128-bit number.
    Ipv6,
    /// IPv4 or IPv6 address (virtual `dev-ip`): IPv4 stored as `::ffff:a.b.c.d`.
    Addr,
    /// MAC address, stored in the low 48 bits.
    Mac,
    /// Unsigned integer of up to 16 bytes.
    Uint,
    /// Aggregable counter (octets, packets): multiplied by the sampling rate.
    Counter,
}

/// Which end of the flow a two-sided field describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
    /// One-sided field (`proto`, `tcp-flags`, ...).
    None,
}

/// One row of the field table.
#[derive(Debug)]
pub struct FieldDef {
    /// Slot of the field in a flow (only meaningful for kinds other than `Info`).
    pub id: FieldId,
    /// IANA information element number; 0 for virtual fields.
    pub ie: u16,
    pub kind: Kind,
    /// Whether the field has a slot in a flow (false: label only).
    pub stored: bool,
    /// Label used by `dump-flows` (the original collector's wording).
    pub label: &'static str,
    /// Names usable in filters and field lists (with a `src `/`dst ` prefix when `side` is set).
    pub names: &'static [&'static str],
    pub side: Side,
}

macro_rules! field_table {
    (
        stored { $( $id:ident = $ie:expr, $kind:ident, $label:expr, [$($name:expr),*], $side:ident; )* }
        info { $( $iid:ident = $iie:expr, $ikind:ident, $ilabel:expr; )* }
    ) => {
        /// Identifier of a field; the stored fields come first and index the flow slots.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum FieldId { $($id,)* $($iid,)* }

        /// Number of fields stored in a flow (the stored rows of the table).
        pub const STORED_COUNT: usize = [$(FieldId::$id),*].len();

        /// Number of fields in the table (stored and label-only).
        pub const FIELD_COUNT: usize = [$(FieldId::$id,)* $(FieldId::$iid),*].len();

        /// The whole table: stored rows first (in `FieldId` order), then label-only rows.
        pub static FIELDS: &[FieldDef] = &[
            $( FieldDef { id: FieldId::$id, ie: $ie, kind: Kind::$kind, stored: true, label: $label,
                          names: &[$($name),*], side: Side::$side }, )*
            $( FieldDef { id: FieldId::$iid, ie: $iie, kind: Kind::$ikind, stored: false, label: $ilabel,
                          names: &[], side: Side::None }, )*
        ];
    };
}

field_table! {
    stored {
        Octets      = 1,   Counter, "Bytes",              ["octets"], None;
        Packets     = 2,   Counter, "Packets",            ["packets"], None;
        Proto       = 4,   Uint,    "Protocol",           ["proto"], None;
        SrcTos      = 5,   Uint,    "Src TOS",            ["tos"], Src;
        TcpFlags    = 6,   Uint,    "TCP flags",          ["tcp-flags"], None;
        SrcPort     = 7,   Uint,    "Src port",           ["port"], Src;
        SrcHost     = 8,   Ipv4,    "IPv4 src addr",      ["host", "net"], Src;
        InIfIdx     = 10,  Uint,    "Input SNMP index",   ["ifidx"], Src;
        DstPort     = 11,  Uint,    "Dst port",           ["port"], Dst;
        DstHost     = 12,  Ipv4,    "IPv4 dst addr",      ["host", "net"], Dst;
        OutIfIdx    = 14,  Uint,    "Output SNMP index",  ["ifidx"], Dst;
        SrcAs       = 16,  Uint,    "Src AS",             ["as"], Src;
        DstAs       = 17,  Uint,    "Dst AS",             ["as"], Dst;
        BgpNextHop  = 18,  Ipv4,    "BGP IPv4 next hop",  ["bgp-nh"], None;
        SrcHost6    = 27,  Ipv6,    "IPv6 src addr",      ["host6", "net6"], Src;
        DstHost6    = 28,  Ipv6,    "IPv6 dst addr",      ["host6", "net6"], Dst;
        Sampler     = 48,  Uint,    "Sampler ID",         ["smplr"], None;
        MinTtl      = 52,  Uint,    "Min TTL",            ["min-ttl"], None;
        MaxTtl      = 53,  Uint,    "Max TTL",            ["max-ttl"], None;
        FragId      = 54,  Uint,    "Fragment ID",        ["frag-id"], None;
        DstTos      = 55,  Uint,    "Dst TOS",            ["tos"], Dst;
        SrcMac      = 56,  Mac,     "Src MAC",            ["mac"], Src;
        DstMac      = 57,  Mac,     "Dst MAC",            ["mac"], Dst;
        SrcVlan     = 58,  Uint,    "Src VLAN",           ["vlan"], Src;
        DstVlan     = 59,  Uint,    "Dst VLAN",           ["vlan"], Dst;
        Direction   = 61,  Uint,    "Direction",          ["dir"], None;
        FwdStatus   = 89,  Uint,    "Forwarding status",  ["fwdst"], None;
        EndReason   = 136, Uint,    "Flow end reason",    ["endreason"], None;
        IngressVrf  = 234, Uint,    "Ingress VRF ID",     ["vrf"], Src;
        EgressVrf   = 235, Uint,    "Egress VRF ID",      ["vrf"], Dst;
        D1qVlan     = 243, Uint,    "dot1q VLAN",         ["d1qvlan"], Src;
        D1qCVlan    = 245, Uint,    "dot1q customer VLAN", ["d1qcvlan"], Src;
        PostD1qVlan = 254, Uint,    "Post dot1q VLAN",    ["d1qvlan"], Dst;
        PostD1qCVlan = 255, Uint,   "Post dot1q customer VLAN", ["d1qcvlan"], Dst;
        DevIp       = 0,   Addr,    "dev-ip",             ["dev-ip"], None;
        DevId       = 0,   Uint,    "dev-id",             ["dev-id"], None;
        Rate        = 0,   Uint,    "rate",               ["rate"], None;
    }
    info {
        SrcMask      = 9, Uint, "Src mask";
        DstMask      = 13, Uint, "Dst mask";
        NextHop      = 15, Ipv4, "IPv4 next hop";
        LastSwitched = 21, Uint, "Last switched";
        FirstSwitched = 22, Uint, "First switched";
        OutBytes     = 23, Uint, "Out bytes";
        OutPackets   = 24, Uint, "Out packets";
        SrcMask6     = 29, Uint, "IPv6 src mask";
        DstMask6     = 30, Uint, "IPv6 dst mask";
        IcmpType     = 32, Uint, "ICMP type";
        SamplingInterval = 34, Uint, "Sampling interval";
        SamplingAlgorithm = 35, Uint, "Sampling algorithm";
        SamplerMode  = 49, Uint, "Sampler mode";
        SamplerRandomInterval = 50, Uint, "Sampler random interval";
        IpVersion    = 60, Uint, "IP version";
        NextHop6     = 62, Ipv6, "IPv6 next hop";
        OctetTotal   = 85, Uint, "Total bytes";
        PacketTotal  = 86, Uint, "Total packets";
        SamplingPacketInterval = 305, Uint, "Sampling packet interval";
        SamplingPacketSpace = 306, Uint, "Sampling packet space";
    }
}

// A flow records which slots are present in a `u64` bit set.
const _: () = assert!(STORED_COUNT <= 64);

/// Information elements that mean the same as a stored field, used only when the template does
/// not carry the primary element (IPFIX exporters that send total instead of delta counts).
pub const IE_ALIASES: &[(u16, FieldId)] = &[(85, FieldId::Octets), (86, FieldId::Packets)];

/// IANA paddingOctets: never printed or stored.
pub const IE_PADDING: u16 = 210;

impl FieldId {
    /// The table row of this field.
    pub fn def(self) -> &'static FieldDef {
        &FIELDS[self as usize]
    }

    /// True when the field has a slot in a flow.
    pub fn is_stored(self) -> bool {
        (self as usize) < STORED_COUNT
    }

    /// Bits of the information element's type, for the numbers of 8 bits (a protocol, a ToS,
    /// a TTL, a direction, an end reason): such a field has at most 256 values (a key
    /// extended by it, see `KeyLayout::extended`, at most 257 variants).
    pub fn narrow_bits(self) -> Option<u32> {
        use FieldId::*;
        match self {
            Proto | SrcTos | DstTos | MinTtl | MaxTtl | Direction | EndReason => Some(8),
            _ => None,
        }
    }
}

/// The row describing a standard (non-enterprise) information element, if the table knows it.
pub fn by_ie(ie: u16) -> Option<&'static FieldDef> {
    if ie == 0 {
        return None;
    }
    FIELDS.iter().find(|f| f.ie == ie)
}

/// The stored field a template element fills: the element's own row, else an alias.
pub fn stored_for_ie(ie: u16) -> Option<FieldId> {
    match by_ie(ie) {
        Some(def) if def.stored => Some(def.id),
        _ => IE_ALIASES.iter().find(|(a, _)| *a == ie).map(|(_, id)| *id),
    }
}

/// Resolves a field name as written in filters and field lists (`"src host"`, `"proto"`,
/// `"dst as"`, `"dev-ip"`): returns the matching rows (both sides when no prefix is given).
pub fn lookup(name: &str) -> Vec<FieldId> {
    let name = name.trim().to_ascii_lowercase();
    let (side, base) = if let Some(rest) = name.strip_prefix("src ") {
        (Some(Side::Src), rest.trim())
    } else if let Some(rest) = name.strip_prefix("dst ") {
        (Some(Side::Dst), rest.trim())
    } else {
        (None, name.as_str())
    };
    FIELDS
        .iter()
        .filter(|f| f.stored && f.names.contains(&base))
        .filter(|f| match side {
            Some(s) => f.side == s,
            None => true,
        })
        .map(|f| f.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_field_name() {
        // The table of the README's *Filter language*: two columns of names, each row
        // `| names | element | | names | element |`.
        let rows = crate::testreadme::table_after("### Filter language");
        let listed: std::collections::BTreeSet<&str> = rows.iter().flat_map(|c| [c[0], c[3]]).flat_map(crate::testreadme::backticked).collect();
        let names: std::collections::BTreeSet<&str> = FIELDS.iter().flat_map(|f| f.names.iter().copied()).collect();
        assert_eq!(listed, names);
    }

    #[test]
    fn rows_are_in_id_order_and_ies_unique() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(f.id as usize, i, "row {} out of order", f.label);
        }
        let mut ies: Vec<u16> = FIELDS.iter().map(|f| f.ie).filter(|&ie| ie != 0).collect();
        let n = ies.len();
        ies.sort();
        ies.dedup();
        assert_eq!(ies.len(), n, "an information element appears twice");
    }

    #[test]
    fn iana_numbers_of_spec_fields() {
        // SPEC §3 and IANA's IPFIX registry.
        let expect = [
            ("src host", 8), ("dst host", 12), ("src host6", 27), ("dst host6", 28),
            ("src port", 7), ("dst port", 11), ("proto", 4), ("src tos", 5), ("dst tos", 55),
            ("tcp-flags", 6), ("src ifidx", 10), ("dst ifidx", 14), ("src as", 16),
            ("dst as", 17), ("min-ttl", 52), ("max-ttl", 53), ("frag-id", 54), ("src mac", 56),
            ("dst mac", 57), ("src vlan", 58), ("dst vlan", 59), ("endreason", 136),
            ("src d1qvlan", 243), ("dst d1qvlan", 254), ("src d1qcvlan", 245),
            ("dst d1qcvlan", 255), ("bgp-nh", 18), ("dir", 61), ("fwdst", 89), ("smplr", 48),
            ("src vrf", 234), ("dst vrf", 235), ("octets", 1), ("packets", 2),
        ];
        for (name, ie) in expect {
            let ids = lookup(name);
            assert_eq!(ids.len(), 1, "{name}");
            assert_eq!(ids[0].def().ie, ie, "{name}");
        }
    }

    #[test]
    fn unprefixed_name_matches_both_sides() {
        assert_eq!(lookup("host"), vec![FieldId::SrcHost, FieldId::DstHost]);
        assert_eq!(lookup("NET"), vec![FieldId::SrcHost, FieldId::DstHost]);
        assert_eq!(lookup("dev-ip"), vec![FieldId::DevIp]);
        assert!(lookup("src proto").is_empty());
    }

    #[test]
    fn aliases_and_info_rows() {
        assert_eq!(stored_for_ie(85), Some(FieldId::Octets));
        assert_eq!(stored_for_ie(9), None);
        assert_eq!(by_ie(9).map(|f| f.label), Some("Src mask"));
    }
}
