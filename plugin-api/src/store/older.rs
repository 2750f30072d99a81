//! Store objects of earlier generations seen as the current one, for [`Store`]'s
//! constructors of them (`Store::new`, `from_v1_1`, `from_v1_3`, `from_v1_4`): code
//! written against an older plugin-api that built a `Store` itself, e.g. over a test
//! double, keeps compiling and working. A host never hands a plug-in one of these.
//!
//! [`Store`]: super::Store

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RVec},
};

use crate::error::PluginError;
use crate::native::current::{StoreApi, StoreApi_TO, StoreBox};
use crate::native::v1_1::RequestContextRef;
use crate::native::v1_3::StoreStats;
use crate::native::v1_4::UpdateCallbackBox;
use crate::native::{self as v1_0, Limits, WriteCallbackBox, v1_1, v1_3, v1_4};

type Got = RResult<ROption<RVec<u8>>, PluginError>;
type Checked = RResult<(), PluginError>;

/// What an older store object answers for 1.4's atomic operations.
fn too_old() -> PluginError {
    PluginError::invalid_input(
        "this store object predates plugin-api 1.4: it has no atomic operations \
         (conditions, counters, expiry); build the frontend with `Store::from_v1_4`",
    )
}

/// The atomic operations an older store object cannot make (and 1.7's commit, which
/// it does not need: its writes are never deferred).
macro_rules! no_atomics {
    () => {
        fn commit(&self) {}
        fn get_entry(&self, _: &RequestContextRef<'_>, _: RSlice<'_, u8>, _: u8) -> Got {
            RResult::RErr(too_old())
        }
        fn update(&self, _: &RequestContextRef<'_>, _: RVec<u8>, mut done: UpdateCallbackBox) {
            done.complete(RResult::RErr(too_old()))
        }
    };
}

/// What an older store object can say about a key without writing it: its limits.
fn limits_only(limits: Limits, key: RSlice<'_, u8>) -> Checked {
    if key.is_empty() {
        RResult::RErr(PluginError::invalid_input("key is empty"))
    } else if key.len() as u64 > limits.max_key_bytes {
        RResult::RErr(PluginError::new(
            crate::ErrorCode::TOO_LARGE,
            format!(
                "key is longer than the limit of {} bytes",
                limits.max_key_bytes
            ),
        ))
    } else {
        RResult::ROk(())
    }
}

struct V1_0(v1_0::StoreBox);

impl StoreApi for V1_0 {
    no_atomics!();
    fn check(&self, _: &RequestContextRef<'_>, _: u8, key: RSlice<'_, u8>) -> Checked {
        limits_only(self.0.limits(), key)
    }
    fn get(&self, _ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>) -> Got {
        self.0.get(key)
    }
    fn get_consistent(&self, _: &RequestContextRef<'_>, key: RSlice<'_, u8>, _: u8) -> Got {
        self.0.get(key)
    }
    fn put(
        &self,
        _: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        self.0.put(key, value, done)
    }
    fn delete(&self, _: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        self.0.delete(key, done)
    }
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn limits(&self) -> Limits {
        self.0.limits()
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

struct V1_1(v1_1::StoreBox);

impl StoreApi for V1_1 {
    no_atomics!();
    fn check(&self, _: &RequestContextRef<'_>, _: u8, key: RSlice<'_, u8>) -> Checked {
        limits_only(self.0.limits(), key)
    }
    fn get(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>) -> Got {
        self.0.get(ctx, key)
    }
    fn get_consistent(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>, _: u8) -> Got {
        self.0.get(ctx, key)
    }
    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        self.0.put(ctx, key, value, done)
    }
    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        self.0.delete(ctx, key, done)
    }
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn limits(&self) -> Limits {
        self.0.limits()
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

struct V1_3(v1_3::StoreBox);

impl StoreApi for V1_3 {
    no_atomics!();
    fn check(&self, _: &RequestContextRef<'_>, _: u8, key: RSlice<'_, u8>) -> Checked {
        limits_only(self.0.limits(), key)
    }
    fn get(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>) -> Got {
        self.0.get(ctx, key)
    }
    fn get_consistent(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>, c: u8) -> Got {
        self.0.get_consistent(ctx, key, c)
    }
    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        self.0.put(ctx, key, value, done)
    }
    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        self.0.delete(ctx, key, done)
    }
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn limits(&self) -> Limits {
        self.0.limits()
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

/// A 1.4 store object: everything but 1.7's `commit` (its writes are never deferred).
struct V1_4(v1_4::StoreBox);

impl StoreApi for V1_4 {
    fn get(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>) -> Got {
        self.0.get(ctx, key)
    }
    fn get_consistent(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>, c: u8) -> Got {
        self.0.get_consistent(ctx, key, c)
    }
    fn put(
        &self,
        ctx: &RequestContextRef<'_>,
        key: RVec<u8>,
        value: RVec<u8>,
        done: WriteCallbackBox,
    ) {
        self.0.put(ctx, key, value, done)
    }
    fn delete(&self, ctx: &RequestContextRef<'_>, key: RVec<u8>, done: WriteCallbackBox) {
        self.0.delete(ctx, key, done)
    }
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn limits(&self) -> Limits {
        self.0.limits()
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
    fn check(&self, ctx: &RequestContextRef<'_>, action: u8, key: RSlice<'_, u8>) -> Checked {
        self.0.check(ctx, action, key)
    }
    fn get_entry(&self, ctx: &RequestContextRef<'_>, key: RSlice<'_, u8>, c: u8) -> Got {
        self.0.get_entry(ctx, key, c)
    }
    fn update(&self, ctx: &RequestContextRef<'_>, update: RVec<u8>, done: UpdateCallbackBox) {
        self.0.update(ctx, update, done)
    }
    fn commit(&self) {}
}

pub(super) fn from_v1_4(store: v1_4::StoreBox) -> StoreBox {
    StoreApi_TO::from_value(V1_4(store), TD_Opaque)
}

pub(super) fn from_v1_0(store: v1_0::StoreBox) -> StoreBox {
    StoreApi_TO::from_value(V1_0(store), TD_Opaque)
}

pub(super) fn from_v1_1(store: v1_1::StoreBox) -> StoreBox {
    StoreApi_TO::from_value(V1_1(store), TD_Opaque)
}

pub(super) fn from_v1_3(store: v1_3::StoreBox) -> StoreBox {
    StoreApi_TO::from_value(V1_3(store), TD_Opaque)
}
