// Rust's collections (Vec, HashMap, BTreeMap, Box, Rc) kept in statics and locals, plus real
// leaks: Rc cycles nobody points to and forgotten boxes. rustc links with lld by default, so the
// statics sit in the data segment lld lays out (RELRO and .data sharing a file page).
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Mutex;

struct Node {
    name: String,
    next: RefCell<Option<Rc<Node>>>,
}

static REGISTRY: Mutex<Vec<Box<[u64; 6]>>> = Mutex::new(Vec::new());
static mut LAST: Option<Box<String>> = None;

fn leak_cycle(index: usize) {
    let first = Rc::new(Node { name: format!("first-{index}"), next: RefCell::new(None) });
    let second = Rc::new(Node { name: format!("second-{index}"), next: RefCell::new(Some(first.clone())) });
    *first.next.borrow_mut() = Some(second.clone());
    assert!(first.name.len() < second.name.len());
}

fn main() {
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
    let mut ordered: BTreeMap<u32, Box<String>> = BTreeMap::new();
    for index in 0..count {
        by_name.entry(format!("key-{}", index % 37)).or_default().push(index as u32);
        ordered.insert(index as u32, Box::new(format!("value number {index}")));
        REGISTRY.lock().unwrap().push(Box::new([index as u64; 6]));
    }
    unsafe { LAST = Some(Box::new(String::from("kept in a static"))) };
    for index in 0..4 {
        leak_cycle(index);
    }
    for index in 0..3 {
        std::mem::forget(Box::new([index as u8; 40]));
    }
    let total: usize = by_name.values().map(|v| v.len()).sum();
    println!("{} keys, {} values, {} ordered, {} registered", by_name.len(), total, ordered.len(),
             REGISTRY.lock().unwrap().len());
    // A forgotten map: its table is definitely lost, the keys and vectors in it indirectly.
    std::mem::forget(by_name);
    // Dropped at the end of main, like most of a program's state.
    drop(ordered);
}
