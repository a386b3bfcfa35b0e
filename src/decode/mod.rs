//! Decoding of NetFlow v5, v9 and IPFIX datagrams into flows.
//!
//! A [`Decoder`] belongs to one capture worker: it owns that worker's template cache, announced
//! sampling rates, statistics and the one [`Flow`] it refills for every record, so decoding takes
//! no lock and allocates nothing per flow. Each decoded flow goes to a [`FlowSink`] together with
//! a [`RecordView`] of its raw bytes (for `dump-flows` and tests). The decoder knows nothing of
//! sockets, objects or exports.
//!
//! Every value read off the wire is bounds-checked; malformed input is counted by reason and
//! exporter and skipped, never a panic.

pub mod cache;
mod ipfix;
mod netflow5;
mod netflow9;
pub mod template;

use crate::devices::{canonical, Devices};
use crate::fields::FieldId;
use crate::flow::{addr_to_u128, Flow};
use cache::{Insert, RawTemplate, TemplateCache, TemplateKey, TemplateStore};
use std::net::IpAddr;
use std::sync::Arc;
use template::{parse_template_record, Template, Wire};

/// One received datagram: payload, exporter address and receipt time.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub bytes: &'a [u8],
    pub exporter: IpAddr,
    /// Unix milliseconds (collector clock, or capture time when replaying a file).
    pub time_ms: u64,
}

/// The raw record behind a flow.
pub struct RecordView<'a> {
    /// 5, 9 or 10.
    pub version: u16,
    pub exporter: IpAddr,
    /// v9 source id / IPFIX observation domain (v5: engine type << 8 | engine id).
    pub domain: u32,
    pub template_id: u16,
    pub template: &'a Template,
    pub bytes: &'a [u8],
}

impl RecordView<'_> {
    /// `(element, value bytes)` pairs in template order.
    pub fn elements(&self) -> template::Elements<'_> {
        self.template.elements(self.bytes)
    }
}

/// Receives decoded records.
pub trait FlowSink {
    /// A flow (data record), with virtual fields set and counters scaled by the sampling rate.
    fn flow(&mut self, flow: &Flow, record: &RecordView<'_>);
    /// An options data record (sampling rates, interface names...), after the decoder used it.
    fn options_record(&mut self, _record: &RecordView<'_>) {}
}

macro_rules! reasons {
    ($($name:ident => $text:expr,)*) => {
        /// Why (part of) a datagram was not decoded.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DecodeError { $($name,)* }
        impl DecodeError {
            pub const ALL: &'static [DecodeError] = &[$(DecodeError::$name,)*];
            /// Short name used in logs and metrics.
            pub fn name(self) -> &'static str { match self { $(DecodeError::$name => $text,)* } }
        }
    };
}

reasons! {
    ShortHeader => "short_header",
    UnknownVersion => "unknown_version",
    BadLength => "bad_length",
    BadSet => "bad_set",
    BadTemplate => "bad_template",
    NoTemplate => "no_template",
    RecordTruncated => "record_truncated",
    TemplateLimit => "template_limit",
}

/// Counters of one decoder. Everything that moves is counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub datagrams: u64,
    pub bytes: u64,
    pub flows: u64,
    /// Octets of the flows (sampling rate applied).
    pub octets: u64,
    pub options_records: u64,
    pub templates_new: u64,
    pub templates_changed: u64,
    pub templates_withdrawn: u64,
    pub errors: [u64; DecodeError::ALL.len()],
}

impl DecodeStats {
    pub fn error(&self, e: DecodeError) -> u64 {
        self.errors[e as usize]
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Adds another decoder's counters (workers are summed for reporting).
    pub fn add(&mut self, o: &DecodeStats) {
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.flows += o.flows;
        self.octets += o.octets;
        self.options_records += o.options_records;
        self.templates_new += o.templates_new;
        self.templates_changed += o.templates_changed;
        self.templates_withdrawn += o.templates_withdrawn;
        for (a, b) in self.errors.iter_mut().zip(o.errors.iter()) {
            *a += b;
        }
    }
}

/// Counters per exporter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterStats {
    pub datagrams: u64,
    pub bytes: u64,
    pub flows: u64,
    /// Octets of the flows (sampling rate applied).
    pub octets: u64,
    pub errors: u64,
}

impl ExporterStats {
    /// Adds another set of counters (of another worker, say) to these.
    pub fn add(&mut self, other: &ExporterStats) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.flows += other.flows;
        self.octets += other.octets;
        self.errors += other.errors;
    }
}

/// Statistics per exporter address. The maps the decoder consults for every datagram
/// (these, the templates, the announced and configured sampling rates) hash with foldhash:
/// keyed per process like the standard hasher, and a tenth of its cost.
pub type ExporterMap = foldhash::HashMap<IpAddr, ExporterStats>;

/// Bound on distinct exporters tracked by name in the statistics (the rest are summed).
const MAX_EXPORTER_STATS: usize = 4096;

/// Decoder state of one worker.
pub struct Decoder {
    templates: TemplateCache,
    store: Option<Arc<TemplateStore>>,
    devices: Arc<Devices>,
    /// Sampling rates announced by exporters, per (exporter, domain).
    announced: foldhash::HashMap<(IpAddr, u32), u64>,
    flow: Flow,
    pub stats: DecodeStats,
    pub exporters: ExporterMap,
    /// Errors of the current datagram (to attribute them to the exporter).
    dgram_errors: u64,
}

impl Decoder {
    /// A decoder with the given devices; templates come from `store` (if any) and are saved to it.
    pub fn new(devices: Arc<Devices>, store: Option<Arc<TemplateStore>>) -> Self {
        let mut templates = TemplateCache::default();
        if let Some(s) = &store {
            templates.load(&s.snapshot());
        }
        Decoder {
            templates,
            store,
            devices,
            announced: Default::default(),
            flow: Flow::default(),
            stats: DecodeStats::default(),
            exporters: Default::default(),
            dgram_errors: 0,
        }
    }

    /// Number of templates this decoder holds.
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// Decodes one datagram, sending every record to `sink`.
    pub fn decode(&mut self, dg: &Datagram<'_>, sink: &mut impl FlowSink) {
        let dg = Datagram { exporter: canonical(dg.exporter), ..*dg };
        self.stats.datagrams += 1;
        self.stats.bytes += dg.bytes.len() as u64;
        self.dgram_errors = 0;
        let (flows_before, octets_before) = (self.stats.flows, self.stats.octets);
        match template::be16(dg.bytes, 0) {
            None => self.error(DecodeError::ShortHeader),
            Some(5) => netflow5::decode(self, &dg, sink),
            Some(9) => netflow9::decode(self, &dg, sink),
            Some(10) => ipfix::decode(self, &dg, sink),
            Some(_) => self.error(DecodeError::UnknownVersion),
        }
        let flows = self.stats.flows - flows_before;
        let octets = self.stats.octets - octets_before;
        let errors = self.dgram_errors;
        let n = self.exporters.len();
        let key = if n < MAX_EXPORTER_STATS || self.exporters.contains_key(&dg.exporter) {
            dg.exporter
        } else {
            IpAddr::from([0u8; 16]) // "other exporters"
        };
        let e = self.exporters.entry(key).or_default();
        e.datagrams += 1;
        e.bytes += dg.bytes.len() as u64;
        e.flows += flows;
        e.octets += octets;
        e.errors += errors;
    }

    #[inline]
    fn error(&mut self, e: DecodeError) {
        self.stats.errors[e as usize] += 1;
        self.dgram_errors += 1;
    }

    /// Handles one template record; returns how many bytes it took (0: stop parsing the set).
    fn template_record(&mut self, wire: Wire, options: bool, exporter: IpAddr, domain: u32, b: &[u8]) -> usize {
        // Resent unchanged (the common case): a byte comparison, nothing parsed or allocated.
        if let Some((id, len)) = template::template_extent(wire, options, b) {
            if self.templates.is_same(&TemplateKey { exporter, domain, id }, &b[..len]) {
                return len;
            }
        }
        let Some(rec) = parse_template_record(wire, options, b) else { return 0 };
        let key = TemplateKey { exporter, domain, id: rec.id };
        match rec.template {
            None => {
                // IPFIX withdrawal; the set id itself as template id withdraws them all.
                let withdraw_all = rec.id == if options { 3 } else { 2 };
                let removed =
                    if withdraw_all { self.templates.remove_all(exporter, domain, options) } else { vec![key] };
                for k in removed {
                    if withdraw_all || self.templates.remove(&k) {
                        self.stats.templates_withdrawn += 1;
                    }
                    if let Some(s) = &self.store {
                        s.remove(&k);
                    }
                }
                rec.raw_len
            }
            Some(Err(_)) => {
                self.error(DecodeError::BadTemplate);
                0
            }
            Some(Ok(_)) if rec.id < 256 => {
                self.error(DecodeError::BadTemplate);
                0
            }
            Some(Ok(tpl)) => {
                // (Not the same as the one held: that returned above.)
                let raw = RawTemplate { wire, options, bytes: b[..rec.raw_len].to_vec() };
                match self.templates.insert(key, tpl, raw.clone()) {
                    Insert::New => self.stats.templates_new += 1,
                    Insert::Changed => self.stats.templates_changed += 1,
                    Insert::Unchanged => {}
                    Insert::Full => {
                        self.error(DecodeError::TemplateLimit);
                        return rec.raw_len;
                    }
                }
                if let Some(s) = &self.store {
                    s.put(key, raw);
                }
                rec.raw_len
            }
        }
    }

    /// Walks the sets (v9: flowsets) of one v9 datagram or IPFIX message, from its end of
    /// header to its end: templates, options templates, and data sets decoded with their
    /// template. A set whose length does not fit ends the walk (counted); zero fill after the
    /// last set (seen from Palo Alto) ends it quietly.
    pub(super) fn sets(&mut self, wire: Wire, dg: &Datagram<'_>, domain: u32, sets: &[u8], sink: &mut impl FlowSink) {
        let (first_template_set, version) = match wire {
            Wire::V9 => (0, 9),
            Wire::Ipfix => (2, 10),
        };
        let mut pos = 0;
        while sets.len() - pos >= 4 {
            let set_id = template::be16(sets, pos).unwrap_or(0);
            let len = template::be16(sets, pos + 2).unwrap_or(0) as usize;
            if len == 0 && set_id == 0 {
                break;
            }
            if len < 4 || pos + len > sets.len() {
                self.error(DecodeError::BadSet);
                break;
            }
            let body = &sets[pos + 4..pos + len];
            if set_id == first_template_set || set_id == first_template_set + 1 {
                self.template_set(wire, set_id == first_template_set + 1, dg.exporter, domain, body);
            } else if set_id >= 256 {
                self.data_set(version, TemplateKey { exporter: dg.exporter, domain, id: set_id }, body, dg.time_ms, sink);
            } // else reserved
            pos += len;
        }
    }

    /// Handles every template record of a (options) template set.
    fn template_set(&mut self, wire: Wire, options: bool, exporter: IpAddr, domain: u32, body: &[u8]) {
        // Shortest record header: id + count (+ scope count/length for options templates).
        let header = if options { 6 } else { 4 };
        let mut pos = 0;
        while body.len() - pos >= header {
            let used = self.template_record(wire, options, exporter, domain, &body[pos..]);
            if used == 0 {
                break;
            }
            pos += used;
        }
    }

    /// Decodes a v9/IPFIX data set with the template of `key`.
    fn data_set(&mut self, version: u16, key: TemplateKey, body: &[u8], time_ms: u64, sink: &mut impl FlowSink) {
        let Some(tpl) = self.templates.get(&key) else {
            self.error(DecodeError::NoTemplate);
            return;
        };
        if tpl.is_options {
            let (n, truncated) = options_records(tpl, body, &mut self.announced, key, version, sink);
            self.stats.options_records += n;
            if truncated {
                self.error(DecodeError::RecordTruncated);
            }
            return;
        }
        let rate = self.devices.rate(key.exporter, key.domain, self.announced.get(&(key.exporter, key.domain)).copied());
        let ctx = FlowContext { version, key, rate, time_ms };
        let (n, truncated) = data_records(tpl, body, &mut self.flow, &ctx, &mut self.stats.octets, sink);
        self.stats.flows += n;
        if truncated {
            self.error(DecodeError::RecordTruncated);
        }
    }
}

/// What every flow of one data set shares.
struct FlowContext {
    version: u16,
    key: TemplateKey,
    rate: u64,
    time_ms: u64,
}

/// Decodes the data records of one set; returns the count and whether the last was cut short.
#[inline]
fn data_records(
    tpl: &Template,
    body: &[u8],
    flow: &mut Flow,
    ctx: &FlowContext,
    octets: &mut u64,
    sink: &mut impl FlowSink,
) -> (u64, bool) {
    let dev_ip = addr_to_u128(ctx.key.exporter);
    let mut pos = 0usize;
    let mut n = 0u64;
    while body.len() - pos >= tpl.min_len {
        flow.clear();
        let Some(len) = tpl.decode_record(&body[pos..], flow) else {
            return (n, true);
        };
        flow.set(FieldId::DevIp, dev_ip);
        flow.set(FieldId::DevId, ctx.key.domain as u128);
        flow.set(FieldId::Rate, ctx.rate as u128);
        if ctx.rate != 1 {
            flow.scale(FieldId::Octets, ctx.rate);
            flow.scale(FieldId::Packets, ctx.rate);
        }
        flow.time_ms = ctx.time_ms;
        *octets = octets.saturating_add(flow.get_or_zero(FieldId::Octets) as u64);
        let view = RecordView {
            version: ctx.version,
            exporter: ctx.key.exporter,
            domain: ctx.key.domain,
            template_id: ctx.key.id,
            template: tpl,
            bytes: &body[pos..pos + len],
        };
        sink.flow(flow, &view);
        n += 1;
        pos += len;
    }
    (n, false)
}

/// Reads options data records: learns announced sampling rates, then passes them to the sink.
fn options_records(
    tpl: &Template,
    body: &[u8],
    announced: &mut foldhash::HashMap<(IpAddr, u32), u64>,
    key: TemplateKey,
    version: u16,
    sink: &mut impl FlowSink,
) -> (u64, bool) {
    let mut pos = 0usize;
    let mut n = 0u64;
    let mut scratch = Flow::default();
    while body.len() - pos >= tpl.min_len {
        let Some(len) = tpl.decode_record(&body[pos..], &mut scratch) else {
            return (n, true);
        };
        let rec = &body[pos..pos + len];
        if let Some(rate) = announced_rate(tpl, rec) {
            if announced.len() < cache::MAX_TEMPLATES || announced.contains_key(&(key.exporter, key.domain)) {
                announced.insert((key.exporter, key.domain), rate);
            }
        }
        let view = RecordView {
            version,
            exporter: key.exporter,
            domain: key.domain,
            template_id: key.id,
            template: tpl,
            bytes: rec,
        };
        sink.options_record(&view);
        n += 1;
        pos += len;
    }
    (n, false)
}

/// Sampling rate an options record announces: samplingInterval (34), samplerRandomInterval (50),
/// or samplingPacketInterval/Space (305/306: one packet of interval+space is counted... sampled).
fn announced_rate(tpl: &Template, rec: &[u8]) -> Option<u64> {
    let (mut interval, mut random, mut pkt_interval, mut pkt_space) = (None, None, None, None);
    for (spec, value) in tpl.elements(rec) {
        if spec.pen != 0 || value.is_empty() || value.len() > 8 {
            continue;
        }
        let v = template::read_be(value) as u64;
        match spec.ie {
            34 => interval = Some(v),
            50 => random = Some(v),
            305 => pkt_interval = Some(v),
            306 => pkt_space = Some(v),
            _ => {}
        }
    }
    let from_packets = match (pkt_interval, pkt_space) {
        (Some(i), Some(s)) if i > 0 => Some((i + s) / i),
        _ => None,
    };
    interval.or(random).or(from_packets).filter(|&r| r > 1)
}

#[cfg(test)]
pub(crate) mod tests;
