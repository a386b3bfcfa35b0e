//! `dump-flows`: one text line per flow, in the original collector's format, to syslog and
//! stderr or to a file. Meant for checking what arrives, not for production volumes.
//!
//! Every element of the record is printed in template order with its label from the field
//! table (`Unknown field N: 0x.. ` for elements the table does not know), then the virtual
//! fields: `*dev-ip: A; *dev-id: N, *rate: R`.

use crate::config::DumpTarget;
use crate::decode::template::{read_be, FieldSpec};
use crate::decode::RecordView;
use crate::fields::{self, FieldId, Kind, IE_PADDING};
use crate::flow::Flow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Formats one flow as a dump line (without a newline).
pub fn format_flow(flow: &Flow, rec: &RecordView<'_>, out: &mut String) {
    out.clear();
    for (spec, value) in rec.elements() {
        if spec.pen == 0 && spec.ie == IE_PADDING {
            continue;
        }
        format_element(spec, value, out);
    }
    let dev_ip = flow.addr(FieldId::DevIp).map(|a| a.to_string()).unwrap_or_default();
    let _ = write!(
        out,
        "*dev-ip: {dev_ip}; *dev-id: {}, *rate: {}",
        flow.get_or_zero(FieldId::DevId),
        flow.get_or_zero(FieldId::Rate)
    );
}

fn format_element(spec: &FieldSpec, value: &[u8], out: &mut String) {
    let def = if spec.pen == 0 { fields::by_ie(spec.ie) } else { None };
    let printed = def.is_some_and(|d| {
        let text = match (d.kind, value.len()) {
            (Kind::Ipv4, 4) => Ipv4Addr::new(value[0], value[1], value[2], value[3]).to_string(),
            (Kind::Ipv6, 16) => Ipv6Addr::from(<[u8; 16]>::try_from(value).unwrap_or([0; 16])).to_string(),
            (Kind::Mac, 6) => value.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
            (Kind::Uint | Kind::Counter, 1..=16) => read_be(value).to_string(),
            _ => return false,
        };
        let _ = write!(out, "{}: {}; ", d.label, text);
        true
    });
    if !printed {
        let _ = if spec.pen == 0 {
            write!(out, "Unknown field {}: ", spec.ie)
        } else {
            write!(out, "Unknown field {}.{}: ", spec.pen, spec.ie)
        };
        for b in value {
            let _ = write!(out, "0x{b:02x} ");
        }
        out.push_str("; ");
    }
}

/// Where a worker (or an object) writes its dump lines.
pub struct Dumper {
    out: Output,
    line: String,
}

/// An open dump target.
enum Output {
    Syslog,
    Stdout,
    File(std::fs::File),
}

impl Dumper {
    /// `None` when dumping is off.
    pub fn open(target: &DumpTarget) -> std::io::Result<Option<Dumper>> {
        let out = match target {
            DumpTarget::None => return Ok(None),
            DumpTarget::Syslog => Output::Syslog,
            DumpTarget::Stdout => Output::Stdout,
            DumpTarget::File(p) => Output::File(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        Ok(Some(Dumper { out, line: String::new() }))
    }

    pub fn write(&mut self, flow: &Flow, rec: &RecordView<'_>) {
        format_flow(flow, rec, &mut self.line);
        // One write per line (on an append-mode file, under stdout's lock): lines of several
        // workers never mix.
        match &mut self.out {
            Output::Syslog => crate::log::debug_always(&self.line),
            Output::Stdout => {
                self.line.push('\n');
                let _ = std::io::stdout().lock().write_all(self.line.as_bytes());
            }
            Output::File(f) => {
                self.line.push('\n');
                let _ = f.write_all(self.line.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::template::Template;

    #[test]
    fn line_matches_the_original_format() {
        let specs = [(8u16, 4u16), (4, 1), (152, 2), (210, 1), (56, 6)]
            .iter()
            .map(|&(ie, len)| FieldSpec { ie, pen: 0, len, field: None })
            .collect();
        let tpl = Template::compile(specs, 0, false).unwrap();
        let bytes = [1, 2, 3, 4, 6, 0x01, 0x77, 0, 0, 0x0c, 0x29, 0x70, 0x86, 0x09];
        let rec = RecordView {
            version: 9,
            exporter: "9.10.11.12".parse().unwrap(),
            domain: 555500,
            template_id: 256,
            template: &tpl,
            bytes: &bytes,
        };
        let mut flow = Flow::default();
        flow.set(FieldId::DevIp, crate::flow::addr_to_u128(rec.exporter));
        flow.set(FieldId::DevId, 555500);
        flow.set(FieldId::Rate, 1);
        let mut s = String::new();
        format_flow(&flow, &rec, &mut s);
        assert_eq!(
            s,
            "IPv4 src addr: 1.2.3.4; Protocol: 6; Unknown field 152: 0x01 0x77 ; Src MAC: 00:0c:29:70:86:09; \
             *dev-ip: 9.10.11.12; *dev-id: 555500, *rate: 1"
        );
    }
}
