//! The in-memory zone the server answers from: every Service's records by owner name,
//! the names that only have names below them (empty non-terminals, NODATA rather than
//! NXDOMAIN), and PTR names by address. Updated one Service at a time.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::{Name, Record};

use super::records::ServiceRecords;

#[derive(Default)]
pub struct Zone {
    names: HashMap<Name, Vec<Record>>,
    /// Names above some owner name (up to the cluster domain), with how many owner names
    /// lie below each.
    parents: HashMap<Name, usize>,
    /// Address → (Service key, name), several Services may share an endpoint.
    ptrs: HashMap<IpAddr, Vec<(String, Name)>>,
    by_service: HashMap<String, ServiceRecords>,
    domain_labels: u8,
}

/// What the zone holds for a name.
pub enum Found<'a> {
    Records(&'a [Record]),
    /// The name exists (names lie below it) but has no records.
    Empty,
    Missing,
}

impl Zone {
    pub fn new(domain: &Name) -> Zone {
        Zone { domain_labels: domain.num_labels(), ..Zone::default() }
    }

    /// Replace what Service `key` holds (`None`: it is gone).
    pub fn set_service(&mut self, key: &str, records: Option<ServiceRecords>) {
        if let Some(old) = self.by_service.remove(key) {
            self.remove(key, &old);
        }
        if let Some(new) = records {
            self.insert(key, &new);
            self.by_service.insert(key.to_string(), new);
        }
    }

    pub fn lookup(&self, name: &Name) -> Found<'_> {
        match self.names.get(name) {
            Some(records) => Found::Records(records),
            None if self.parents.contains_key(name) => Found::Empty,
            None => Found::Missing,
        }
    }

    pub fn ptr(&self, ip: &IpAddr) -> Option<&[(String, Name)]> {
        self.ptrs.get(ip).map(Vec::as_slice)
    }

    pub fn services(&self) -> usize {
        self.by_service.len()
    }

    fn insert(&mut self, key: &str, records: &ServiceRecords) {
        for (name, list) in &records.names {
            self.names.insert(name.clone(), list.clone());
            for parent in self.parents_of(name) {
                *self.parents.entry(parent).or_default() += 1;
            }
        }
        for (ip, name) in &records.ptrs {
            self.ptrs.entry(*ip).or_default().push((key.to_string(), name.clone()));
        }
    }

    fn remove(&mut self, key: &str, records: &ServiceRecords) {
        for (name, _) in &records.names {
            self.names.remove(name);
            for parent in self.parents_of(name) {
                if let Some(count) = self.parents.get_mut(&parent) {
                    *count -= 1;
                    if *count == 0 {
                        self.parents.remove(&parent);
                    }
                }
            }
        }
        for (ip, _) in &records.ptrs {
            if let Some(list) = self.ptrs.get_mut(ip) {
                list.retain(|(k, _)| k != key);
                if list.is_empty() {
                    self.ptrs.remove(ip);
                }
            }
        }
    }

    /// The names strictly between `name` and the cluster domain.
    fn parents_of(&self, name: &Name) -> Vec<Name> {
        let labels = name.num_labels();
        (self.domain_labels + 1..labels).map(|n| name.trim_to(n as usize)).collect()
    }
}
