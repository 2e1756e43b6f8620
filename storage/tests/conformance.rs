//! One conformance suite that every `Store` backend must pass, plus sled-specific
//! open/reopen behaviour and a check that all backends agree on the same operations.

use std::cell::Cell;
use std::collections::BTreeMap;

use tempfile::TempDir;
use zask_storage::{
    open_store, MemoryStore, SledStore, SpillingStore, Store, StoreError, Tier, Tiers,
};

/// Runs every backend-independent check, each on a fresh, empty store from `make`.
fn conformance_suite(make: impl Fn() -> Box<dyn Store>) {
    starts_empty(&mut *make());
    set_get_replace(&mut *make());
    delete_present_and_absent(&mut *make());
    contains(&mut *make());
    keys(&mut *make());
    clear(&mut *make());
    empty_values(&mut *make());
    large_values(&mut *make());
    binary_keys(&mut *make());
    shared_values(&mut *make());
    matches_model(&mut *make(), 0x5eed, 2_000);
}

/// Sorted keys, because backends may list them in any order.
fn sorted_keys(store: &dyn Store) -> Vec<Vec<u8>> {
    let mut keys = store.keys().unwrap();
    keys.sort();
    keys
}

fn starts_empty(store: &mut dyn Store) {
    assert!(!store.kind().is_empty());
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
    assert_eq!(store.total_bytes(), 0);
    assert!(store.keys().unwrap().is_empty());
    assert_eq!(store.get(b"missing").unwrap(), None);
}

fn set_get_replace(store: &mut dyn Store) {
    store.set(b"a", b"abc".to_vec()).unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"abc".to_vec()));
    assert_eq!((store.len(), store.total_bytes()), (1, 3));

    store.set(b"a", b"longer".to_vec()).unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"longer".to_vec()));
    assert_eq!((store.len(), store.total_bytes()), (1, 6));

    store.set(b"a", b"x".to_vec()).unwrap();
    assert_eq!((store.len(), store.total_bytes()), (1, 1));

    store.set(b"b", b"12345".to_vec()).unwrap();
    assert_eq!((store.len(), store.total_bytes()), (2, 6));
    assert!(!store.is_empty());
    assert_eq!(store.get(b"a").unwrap(), Some(b"x".to_vec()));
    assert_eq!(store.get(b"b").unwrap(), Some(b"12345".to_vec()));
}

fn delete_present_and_absent(store: &mut dyn Store) {
    store.set(b"k1", b"aaaa".to_vec()).unwrap();
    store.set(b"k2", b"bb".to_vec()).unwrap();

    assert!(store.delete(b"k1").unwrap());
    assert_eq!(store.get(b"k1").unwrap(), None);
    assert_eq!((store.len(), store.total_bytes()), (1, 2));

    assert!(!store.delete(b"k1").unwrap(), "second delete finds nothing");
    assert!(!store.delete(b"never").unwrap());
    assert_eq!((store.len(), store.total_bytes()), (1, 2));

    assert!(store.delete(b"k2").unwrap());
    assert!(store.is_empty());
    assert_eq!(store.total_bytes(), 0);
}

fn contains(store: &mut dyn Store) {
    assert!(!store.contains(b"k").unwrap());
    store.set(b"k", b"v".to_vec()).unwrap();
    assert!(store.contains(b"k").unwrap());
    assert!(!store.contains(b"K").unwrap());
    assert!(!store.contains(b"k\0").unwrap(), "no prefix matching");
    store.delete(b"k").unwrap();
    assert!(!store.contains(b"k").unwrap());
}

fn keys(store: &mut dyn Store) {
    for k in [&b"c"[..], b"a", b"b"] {
        store.set(k, k.to_vec()).unwrap();
    }
    store.set(b"a", b"again".to_vec()).unwrap();
    assert_eq!(
        sorted_keys(store),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    store.delete(b"b").unwrap();
    assert_eq!(sorted_keys(store), vec![b"a".to_vec(), b"c".to_vec()]);
    assert_eq!(store.len(), 2);
}

fn clear(store: &mut dyn Store) {
    for i in 0..100u32 {
        store.set(&i.to_be_bytes(), vec![7; i as usize]).unwrap();
    }
    assert_eq!(store.len(), 100);
    assert_eq!(store.total_bytes(), (0..100).sum::<u64>());

    store.clear().unwrap();
    assert!(store.is_empty());
    assert_eq!(store.total_bytes(), 0);
    assert!(store.keys().unwrap().is_empty());
    assert_eq!(store.get(&5u32.to_be_bytes()).unwrap(), None);

    // Clearing an empty store is fine, and the store stays usable.
    store.clear().unwrap();
    store.set(b"after", b"clear".to_vec()).unwrap();
    assert_eq!((store.len(), store.total_bytes()), (1, 5));
}

fn empty_values(store: &mut dyn Store) {
    store.set(b"empty", Vec::new()).unwrap();
    // Present with an empty value is different from absent.
    assert_eq!(store.get(b"empty").unwrap(), Some(Vec::new()));
    assert!(store.contains(b"empty").unwrap());
    assert_eq!((store.len(), store.total_bytes()), (1, 0));
    assert!(!store.is_empty());

    store.set(b"empty", b"now full".to_vec()).unwrap();
    assert_eq!((store.len(), store.total_bytes()), (1, 8));
    store.set(b"empty", Vec::new()).unwrap();
    assert_eq!((store.len(), store.total_bytes()), (1, 0));
    assert!(store.delete(b"empty").unwrap());
    assert!(store.is_empty());
}

/// `get_shared` gives what `get` gives, and a buffer handed out stays as it was whatever
/// happens to its key afterwards (a value being sent must not change under the sender).
fn shared_values(store: &mut dyn Store) {
    assert_eq!(store.get_shared(b"missing").unwrap(), None);
    const BIG: usize = 5 * 1024 * 1024 + 3;
    let big: Vec<u8> = (0..BIG).map(|i| (i * 7 % 253) as u8).collect();
    store.set(b"big", big.clone()).unwrap();
    store.set(b"empty", vec![]).unwrap();
    let shared = store.get_shared(b"big").unwrap().expect("stored");
    assert!(shared[..] == big[..], "the shared buffer holds the value");
    assert_eq!(
        store.get_shared(b"empty").unwrap().as_deref(),
        Some(&[][..])
    );
    assert_eq!((store.len(), store.total_bytes()), (2, BIG as u64));

    store.set(b"big", b"replaced".to_vec()).unwrap();
    assert!(
        shared[..] == big[..],
        "a replaced value's buffer is unchanged"
    );
    assert_eq!(
        store.get_shared(b"big").unwrap().as_deref(),
        Some(&b"replaced"[..])
    );
    let again = store.get_shared(b"big").unwrap().expect("stored");
    assert!(store.delete(b"big").unwrap());
    assert_eq!(
        &again[..],
        b"replaced",
        "a deleted value's buffer is unchanged"
    );
    assert_eq!(store.get_shared(b"big").unwrap(), None);
    assert_eq!((store.len(), store.total_bytes()), (1, 0));
}

fn large_values(store: &mut dyn Store) {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let big: Vec<u8> = (0..TEN_MB).map(|i| (i * 31 % 251) as u8).collect();
    store.set(b"big", big.clone()).unwrap();
    store.set(b"small", b"s".to_vec()).unwrap();
    assert_eq!(store.total_bytes(), TEN_MB as u64 + 1);
    assert!(
        store.get(b"big").unwrap() == Some(big),
        "10 MB value round-trips"
    );

    store.set(b"big", vec![1; 1000]).unwrap();
    assert_eq!(store.total_bytes(), 1001);
    assert!(store.delete(b"big").unwrap());
    assert_eq!((store.len(), store.total_bytes()), (1, 1));
}

fn binary_keys(store: &mut dyn Store) {
    let keys: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0, 0],
        vec![0xff, 0xfe, 0x00, 0x80],
        vec![0xc3, 0x28], // invalid UTF-8
        (0..=255u8).collect(),
        vec![0xab; 1024],
    ];
    for (i, k) in keys.iter().enumerate() {
        store.set(k, vec![i as u8; i]).unwrap();
    }
    assert_eq!(store.len(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(store.get(k).unwrap(), Some(vec![i as u8; i]), "key {k:?}");
        assert!(store.contains(k).unwrap());
    }
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(sorted_keys(store), expected);

    assert!(
        store.delete(&[]).unwrap(),
        "the empty key is a key like any other"
    );
    assert_eq!(store.get(&[0]).unwrap(), Some(vec![1]));
    assert_eq!(store.len(), keys.len() - 1);
}

/// Tiny deterministic generator so op sequences are reproducible without a rand crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        // Knuth's MMIX constants; the high bits are the well-mixed ones.
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Applies `ops` pseudo-random operations from `seed` and returns the observable
/// result of each, so two backends can be compared step by step. A small key space
/// makes replaces, deletes of present keys and misses all common.
fn run_ops(store: &mut dyn Store, seed: u64, ops: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    let mut trace = Vec::with_capacity(ops);
    for step in 0..ops {
        let key = rng.below(48).to_le_bytes()[..1 + rng.below(2) as usize].to_vec();
        let outcome = match rng.below(100) {
            0..=39 => {
                let len = match rng.below(10) {
                    0 => 0,
                    1 => 2_000 + rng.below(6_000) as usize,
                    _ => rng.below(200) as usize,
                };
                let value: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                format!("set {:?}", store.set(&key, value))
            }
            40..=59 => format!("delete {:?}", store.delete(&key)),
            60..=79 => format!("get {:?}", store.get(&key)),
            80..=94 => format!("contains {:?}", store.contains(&key)),
            95..=98 => {
                let mut keys = store.keys().unwrap();
                keys.sort();
                format!("keys {keys:?}")
            }
            _ => format!("clear {:?}", store.clear()),
        };
        trace.push(format!(
            "{step}: {outcome} len={} bytes={}",
            store.len(),
            store.total_bytes()
        ));
    }
    trace
}

/// Every key with its value, sorted, to compare whole stores.
fn contents(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    sorted_keys(store)
        .into_iter()
        .map(|k| {
            let v = store.get(&k).unwrap().expect("listed key has a value");
            (k, v)
        })
        .collect()
}

/// Checks a backend against a `BTreeMap` reference model over a pseudo-random run.
fn matches_model(store: &mut dyn Store, seed: u64, ops: usize) {
    let mut model = MemoryModel::default();
    let expected = run_ops(&mut model, seed, ops);
    let actual = run_ops(store, seed, ops);
    for (e, a) in expected.iter().zip(&actual) {
        assert_eq!(a, e, "{} diverged from the model", store.kind());
    }
    assert_eq!(contents(store), contents(&model));
}

/// The simplest possible correct store, recomputing everything, as the reference.
#[derive(Default)]
struct MemoryModel(BTreeMap<Vec<u8>, Vec<u8>>);

impl Store for MemoryModel {
    fn kind(&self) -> String {
        "model".into()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }
    fn set(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.0.insert(key.to_vec(), value);
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.0.remove(key).is_some())
    }
    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.0.contains_key(key))
    }
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.0.keys().cloned().collect())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn total_bytes(&self) -> u64 {
        self.0.values().map(|v| v.len() as u64).sum()
    }
    fn clear(&mut self) -> Result<(), StoreError> {
        self.0.clear();
        Ok(())
    }
}

/// Hands out fresh sled stores, each in its own subdirectory of one temp dir that
/// outlives them all.
struct SledFactory {
    dir: TempDir,
    next: Cell<u32>,
}

impl SledFactory {
    fn new() -> Self {
        SledFactory {
            dir: tempfile::tempdir().unwrap(),
            next: Cell::new(0),
        }
    }

    fn make(&self) -> Box<dyn Store> {
        let n = self.next.get();
        self.next.set(n + 1);
        Box::new(SledStore::open_fresh(self.dir.path().join(format!("db{n}"))).unwrap())
    }
}

#[test]
fn memory_conformance() {
    conformance_suite(|| Box::new(MemoryStore::new()));
}

#[test]
fn sled_conformance() {
    let factory = SledFactory::new();
    conformance_suite(|| factory.make());
}

#[test]
fn spilling_conformance() {
    let dir = tempfile::tempdir().unwrap();
    conformance_suite(|| Box::new(SpillingStore::open(dir.path()).unwrap()));
}

/// A spilling store that moves every value to disk as soon as it is set, so the suite reads,
/// replaces, deletes and clears values in the disk tier.
struct SpillAtOnce(SpillingStore);

impl Store for SpillAtOnce {
    fn kind(&self) -> String {
        self.0.kind()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key)
    }
    fn get_shared(&self, key: &[u8]) -> Result<Option<zask_storage::Bytes>, StoreError> {
        self.0.get_shared(key)
    }
    fn set(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.0.set(key, value)?;
        assert!(self.0.spill(key)?, "a value just set is in memory");
        assert_eq!(self.0.tier(key)?, Some(Tier::Disk));
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        self.0.delete(key)
    }
    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.0.contains(key)
    }
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.0.keys()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn total_bytes(&self) -> u64 {
        assert_eq!(self.0.memory_bytes(), 0, "everything is on disk");
        self.0.total_bytes()
    }
    fn clear(&mut self) -> Result<(), StoreError> {
        self.0.clear()
    }
}

#[test]
fn spilling_conformance_with_every_value_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    conformance_suite(|| Box::new(SpillAtOnce(SpillingStore::open(dir.path()).unwrap())));
}

#[test]
fn tiers_of_each_backend() {
    let dir = tempfile::tempdir().unwrap();
    let mut memory = MemoryStore::new();
    let mut sled = SledStore::open_fresh(dir.path().join("sled")).unwrap();
    let mut spilling = SpillingStore::open(dir.path().join("spill")).unwrap();
    assert_eq!(memory.tiers(), Tiers::Memory);
    assert_eq!(sled.tiers(), Tiers::Disk);
    assert_eq!(spilling.tiers(), Tiers::Spilling);
    for store in [
        &mut memory as &mut dyn Store,
        &mut sled as &mut dyn Store,
        &mut spilling as &mut dyn Store,
    ] {
        store.set(b"k", vec![1; 10]).unwrap();
        assert_eq!(store.tier(b"absent").unwrap(), None);
    }
    assert_eq!(memory.tier(b"k").unwrap(), Some(Tier::Memory));
    assert_eq!(memory.memory_bytes(), 10);
    assert!(
        !memory.spill(b"k").unwrap(),
        "a memory store has nowhere to spill"
    );
    assert_eq!(sled.tier(b"k").unwrap(), Some(Tier::Disk));
    assert_eq!(sled.memory_bytes(), 0);
    assert!(
        !sled.spill(b"k").unwrap(),
        "a sled store is on disk already"
    );
    assert_eq!(spilling.tier(b"k").unwrap(), Some(Tier::Memory));
    assert_eq!(spilling.memory_bytes(), 10);
}

#[test]
fn spilled_values_move_to_disk_stay_readable_and_leave_with_the_store() {
    let parent = tempfile::tempdir().unwrap();
    let mut store = SpillingStore::open(parent.path()).unwrap();
    let dir = store.dir().to_path_buf();
    assert!(dir.starts_with(parent.path()) && dir.is_dir());
    store.set(b"a", vec![1; 1000]).unwrap();
    store.set(b"b", vec![2; 500]).unwrap();
    assert_eq!((store.memory_bytes(), store.disk_bytes()), (1500, 0));

    assert!(store.spill(b"a").unwrap());
    assert!(!store.spill(b"a").unwrap(), "already on disk");
    assert!(!store.spill(b"absent").unwrap());
    assert_eq!(store.tier(b"a").unwrap(), Some(Tier::Disk));
    assert_eq!((store.memory_bytes(), store.disk_bytes()), (500, 1000));
    assert_eq!(store.total_bytes(), 1500);
    assert_eq!(store.get(b"a").unwrap(), Some(vec![1; 1000]));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "one file");

    // A new value under a spilled key starts in memory; the old file goes.
    store.set(b"a", vec![3; 10]).unwrap();
    assert_eq!(store.tier(b"a").unwrap(), Some(Tier::Memory));
    assert_eq!((store.memory_bytes(), store.disk_bytes()), (510, 0));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    store.spill(b"b").unwrap();
    assert!(store.delete(b"b").unwrap());
    assert_eq!(store.get(b"b").unwrap(), None);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    // Two stores opened on one parent never share files.
    let other = SpillingStore::open(parent.path()).unwrap();
    assert_ne!(other.dir(), store.dir());
    store.spill(b"a").unwrap();
    drop(store);
    assert!(!dir.exists(), "the store's directory leaves with it");
    assert!(other.dir().is_dir());
}

#[test]
fn a_spill_directory_that_cannot_be_written_fails_loudly_and_loses_nothing() {
    // Root ignores permission bits, so the directory is made unwritable for everyone: it is
    // replaced by a regular file, and no file can be created inside it.
    let parent = tempfile::tempdir().unwrap();
    let mut store = SpillingStore::open(parent.path()).unwrap();
    store.set(b"kept", vec![7; 4096]).unwrap();
    store.set(b"spilled", vec![8; 100]).unwrap();
    assert!(store.spill(b"spilled").unwrap());
    let dir = store.dir().to_path_buf();
    let saved = std::fs::read(dir.join("0.value")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();

    let err = store
        .spill(b"kept")
        .expect_err("the spill cannot be written");
    match &err {
        StoreError::Disk { path, message, .. } => {
            assert!(path.starts_with(&dir), "{err}");
            assert!(message.contains("writing a spilled value"), "{err}");
        }
        other => panic!("expected a disk error, got {other:?}"),
    }
    assert!(!err.retry_may_help(), "{err:?}");
    assert!(err.to_string().contains("spill disk error at"), "{err}");
    // The value is still in memory, readable, and counted there.
    assert_eq!(store.tier(b"kept").unwrap(), Some(Tier::Memory));
    assert_eq!(store.get(b"kept").unwrap(), Some(vec![7; 4096]));
    assert_eq!((store.memory_bytes(), store.disk_bytes()), (4096, 100));
    // A spilled value whose file cannot be read is an error naming it, never a wrong value.
    let err = store.get(b"spilled").expect_err("its file is gone");
    assert!(matches!(err, StoreError::Disk { .. }), "{err:?}");
    assert_eq!(saved, vec![8; 100]);
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn a_spill_directory_under_a_file_cannot_be_opened() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    match SpillingStore::open(file.join("spill")) {
        Err(e @ StoreError::Disk { .. }) => {
            assert!(e.to_string().contains("making the spill directory"), "{e}");
            assert!(!e.retry_may_help());
        }
        Err(other) => panic!("expected a disk error, got {other:?}"),
        Ok(store) => panic!("opened {}", store.kind()),
    }
}

#[test]
fn backends_agree_on_the_same_operations() {
    let factory = SledFactory::new();
    let mut memory = MemoryStore::new();
    let mut sled = factory.make();
    for seed in [1, 0xdead_beef] {
        let m = run_ops(&mut memory, seed, 2_000);
        let s = run_ops(&mut *sled, seed, 2_000);
        assert_eq!(m.len(), s.len());
        for (m, s) in m.iter().zip(&s) {
            assert_eq!(m, s, "memory and sled diverged");
        }
        assert_eq!(contents(&memory), contents(&*sled));
        assert_eq!(memory.len(), sled.len());
        assert_eq!(memory.total_bytes(), sled.total_bytes());
    }
}

#[test]
fn sled_open_keeps_data_and_recounts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results");
    {
        let mut store = SledStore::open(&path).unwrap();
        store.set(b"a", b"123".to_vec()).unwrap();
        store.set(b"b", vec![9; 1000]).unwrap();
        store.set(b"gone", b"x".to_vec()).unwrap();
        store.delete(b"gone").unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"123".to_vec()));
    assert_eq!(store.get(b"b").unwrap(), Some(vec![9; 1000]));
    assert_eq!(store.get(b"gone").unwrap(), None);
    // Counters are rebuilt from what is on disk, not started at zero.
    assert_eq!((store.len(), store.total_bytes()), (2, 1003));
    assert_eq!(store.kind(), format!("sled:{}", path.display()));
}

#[test]
fn sled_open_fresh_clears_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results");
    {
        let mut store = SledStore::open(&path).unwrap();
        store.set(b"stale", b"old result".to_vec()).unwrap();
    }
    {
        let mut store = SledStore::open_fresh(&path).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.total_bytes(), 0);
        assert_eq!(store.get(b"stale").unwrap(), None);
        store.set(b"new", b"n".to_vec()).unwrap();
    }
    // The clearing itself persisted: a plain open afterwards sees only the new data.
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.keys().unwrap(), vec![b"new".to_vec()]);
    assert_eq!((store.len(), store.total_bytes()), (1, 1));
}

#[test]
fn sled_path_in_use_is_a_matchable_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results");
    let _held = SledStore::open(&path).unwrap();
    match SledStore::open(&path) {
        Err(StoreError::Locked { path: locked }) => assert_eq!(locked, path),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open of a held directory succeeded"),
    }
}

#[test]
fn open_store_sled_spec_opens_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results");
    {
        let mut store = SledStore::open(&path).unwrap();
        store.set(b"stale", b"old".to_vec()).unwrap();
    }
    let spec = format!("sled:{}", path.display());
    let store = open_store(&spec).unwrap();
    assert_eq!(store.kind(), spec);
    assert!(store.is_empty());
}

#[test]
fn open_store_sled_without_path_names_the_spec() {
    let err = open_store("sled:").err().expect("empty path is rejected");
    assert!(matches!(&err, StoreError::InvalidSpec { spec, .. } if spec == "sled:"));
    assert!(err.to_string().contains("\"sled:\""), "{err}");
}
