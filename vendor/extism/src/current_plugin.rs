use wasmtime::error::Context as _;

use crate::*;

/// CurrentPlugin stores data that is available to the caller in PDK functions, this should
/// only be accessed from inside a host function
pub struct CurrentPlugin {
    /// Plugin variables
    pub(crate) vars: std::collections::BTreeMap<String, Vec<u8>>,

    /// Extism manifest
    pub(crate) manifest: extism_manifest::Manifest,
    pub(crate) store: *mut Store<CurrentPlugin>,
    pub(crate) linker: *mut wasmtime::Linker<CurrentPlugin>,
    pub(crate) wasi: Option<Wasi>,
    pub(crate) http_status: u16,
    pub(crate) http_headers: Option<std::collections::BTreeMap<String, String>>,
    pub(crate) available_pages: Option<u32>,
    pub(crate) memory_limiter: Option<MemoryLimiter>,
    pub(crate) id: uuid::Uuid,
    pub(crate) start_time: std::time::Instant,
    /// kvs patch: kernel exports already looked up in this store's linker. `Linker::get`
    /// interns the name and re-types the export on every call, which was a large share
    /// of each call's cost; a store (and with it this cache) is replaced on reset.
    pub(crate) kernel_exports: Vec<(&'static str, Extern)>,
    /// kvs patch: kernel functions already type-checked, as `TypedFunc`s: a dynamic
    /// `Func::call` re-reads and re-checks the function's type on every call.
    pub(crate) kernel_typed: Vec<(&'static str, Box<dyn std::any::Any>)>,
    /// kvs patch: the running call's deadline and long-call hook, shared with this
    /// store's WASI scheduler so that a blocking WASI wait respects them too.
    pub(crate) call_limits: std::sync::Arc<CallLimits>,
    /// kvs patch: the main module's own exported memory, once instantiated.
    pub(crate) guest_memory: Option<wasmtime::Memory>,
}

unsafe impl Send for CurrentPlugin {}

pub(crate) struct MemoryLimiter {
    bytes_left: usize,
    max_bytes: usize,
}

impl MemoryLimiter {
    pub(crate) fn reset(&mut self) {
        self.bytes_left = self.max_bytes;
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if let Some(max) = maximum {
            if desired >= max {
                return Err(wasmtime::Error::msg("oom"));
            }
        }

        let d = desired - current;
        if d > self.bytes_left {
            return Err(wasmtime::Error::msg("oom"));
        }

        self.bytes_left -= d;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if let Some(max) = maximum {
            return Ok(desired <= max);
        }

        Ok(true)
    }
}

impl CurrentPlugin {
    /// Gets `Plugin`'s ID
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// Get a `MemoryHandle` from a memory offset
    pub fn memory_handle(&mut self, offs: u64) -> Option<MemoryHandle> {
        if offs == 0 {
            return Some(MemoryHandle::null());
        }
        let len = self.memory_length(offs).unwrap_or_default();
        if len == 0 {
            trace!(
                plugin = self.id.to_string(),
                "memory handle not found: offs = {offs}",
            );
            return None;
        }

        trace!(
            plugin = self.id.to_string(),
            "memory handle found: offs = {offs}, length = {len}",
        );
        Some(MemoryHandle {
            offset: offs,
            length: len,
        })
    }

    /// Access memory bytes as `str`
    pub fn memory_str_mut(&mut self, handle: MemoryHandle) -> Result<&mut str, Error> {
        let bytes = self.memory_bytes_mut(handle)?;
        let s = std::str::from_utf8_mut(bytes)?;
        Ok(s)
    }

    pub fn memory_str(&mut self, handle: MemoryHandle) -> Result<&str, Error> {
        let bytes = self.memory_bytes(handle)?;
        let s = std::str::from_utf8(bytes)?;
        Ok(s)
    }

    /// Allocate a handle large enough for the encoded Rust type and copy it into Extism memory
    pub fn memory_new<'a, T: ToBytes<'a>>(&mut self, t: T) -> Result<MemoryHandle, Error> {
        let data = t.to_bytes()?;
        let data = data.as_ref();
        if data.is_empty() {
            return Ok(MemoryHandle::null());
        }
        let handle = self.memory_alloc(data.len() as u64)?;
        let bytes = self.memory_bytes_mut(handle)?;
        bytes.copy_from_slice(data.as_ref());
        Ok(handle)
    }

    /// Decode a Rust type from Extism memory
    pub fn memory_get<'a, T: FromBytes<'a>>(
        &'a mut self,
        handle: MemoryHandle,
    ) -> Result<T, Error> {
        let data = self.memory_bytes(handle)?;
        T::from_bytes(data)
    }

    /// Decode a Rust type from Extism memory from an offset in memory specified by a `Val`
    pub fn memory_get_val<'a, T: FromBytes<'a>>(&'a mut self, offs: &Val) -> Result<T, Error> {
        trace!(
            plugin = self.id.to_string(),
            "memory_set_val: val = {:?}",
            offs
        );
        if let Some(handle) = self.memory_handle(offs.i64().unwrap_or(0) as u64) {
            let data = self.memory_bytes(handle)?;
            T::from_bytes(data)
        } else {
            anyhow::bail!("{} invalid memory offset: {offs:?}", self.id)
        }
    }

    /// Encode a Rust type into Extism memory and store it in the given `Val`, this can be used to return
    /// values from host functions.    
    pub fn memory_set_val<'a, T: ToBytes<'a>>(
        &'a mut self,
        offs: &mut Val,
        data: T,
    ) -> Result<(), Error> {
        let mem = self.memory_new(data)?;
        trace!(
            plugin = self.id.to_string(),
            "memory_set_val: val = {:?}",
            offs
        );
        *offs = Val::I64(mem.offset as i64);
        Ok(())
    }

    pub fn memory_bytes_mut(&mut self, handle: MemoryHandle) -> Result<&mut [u8], Error> {
        let id = self.id;
        let kernel_export = self.kernel("memory");
        let (_, store) = self.linker_and_store();
        if let Some(mem) = kernel_export {
            let mem = mem.into_memory().unwrap();
            // kvs patch: a guest can write the kernel's bookkeeping (`store_u64`), so an
            // offset or length read from it may point anywhere: check it against the
            // kernel memory's size before making a slice of it.
            check_in_bounds(&id, &handle, mem.data_size(&*store))?;
            let ptr = unsafe { mem.data_ptr(&*store).add(handle.offset() as usize) };
            if ptr.is_null() {
                return Ok(&mut []);
            }
            return Ok(unsafe { std::slice::from_raw_parts_mut(ptr, handle.len()) });
        }

        anyhow::bail!("{} unable to locate extism memory", self.id)
    }

    pub fn memory_bytes(&mut self, handle: MemoryHandle) -> Result<&[u8], Error> {
        let id = self.id;
        let kernel_export = self.kernel("memory");
        let (_, store) = self.linker_and_store();
        if let Some(mem) = kernel_export {
            let mem = mem.into_memory().unwrap();
            // kvs patch: a guest can write the kernel's bookkeeping (`store_u64`), so an
            // offset or length read from it may point anywhere: check it against the
            // kernel memory's size before making a slice of it.
            check_in_bounds(&id, &handle, mem.data_size(&*store))?;
            let ptr = unsafe { mem.data_ptr(&*store).add(handle.offset() as usize) };
            if ptr.is_null() {
                return Ok(&[]);
            }
            return Ok(unsafe { std::slice::from_raw_parts(ptr, handle.len()) });
        }

        anyhow::bail!("{} unable to locate extism memory", self.id)
    }

    pub fn host_context<T: 'static>(&mut self) -> Result<&mut T, Error> {
        let kernel_export = self.kernel("extism_context");
        let (_, store) = self.linker_and_store();
        let Some(Extern::Global(xs)) = kernel_export else {
            anyhow::bail!("unable to locate an extism kernel global: extism_context",)
        };

        let Val::ExternRef(Some(xs)) = xs.get(&mut *store) else {
            anyhow::bail!("expected extism_context to be an externref value",)
        };

        if let Some(d) = xs.data_mut(&mut *store)? {
            match d.downcast_mut::<Box<dyn std::any::Any + Send + Sync>>() {
                Some(xs) => match xs.downcast_mut::<T>() {
                    Some(xs) => Ok(xs),
                    None => anyhow::bail!("could not downcast extism_context inner value"),
                },
                None => anyhow::bail!("could not downcast extism_context"),
            }
        } else {
            anyhow::bail!("extism_context not found")
        }
    }

    pub fn memory_alloc(&mut self, n: u64) -> Result<MemoryHandle, Error> {
        if n == 0 {
            return Ok(MemoryHandle {
                offset: 0,
                length: 0,
            });
        }
        let kernel_export = self.kernel_typed::<i64, i64>("alloc");
        let (_, store) = self.linker_and_store();
        let output = &mut [Val::I64(0)];
        if let Some(f) = kernel_export {
            catch_out_of_fuel!(
                &store,
                f.call(&mut *store, n as i64)
                    .map(|r| output[0] = Val::I64(r))
                    .context("failed to allocate extism memory")
            )?;
        } else {
            anyhow::bail!("{} unable to allocate memory", self.id);
        }
        let offs = output[0].unwrap_i64() as u64;
        if offs == 0 {
            anyhow::bail!("{} out of memory", self.id)
        }
        trace!(
            plugin = self.id.to_string(),
            "memory_alloc({}) = {}",
            offs,
            n
        );
        Ok(MemoryHandle {
            offset: offs,
            length: n,
        })
    }

    /// Free a block of Extism plugin memory
    pub fn memory_free(&mut self, handle: MemoryHandle) -> Result<(), Error> {
        let kernel_export = self.kernel_typed::<i64, ()>("free");
        let (_, store) = self.linker_and_store();
        if let Some(f) = kernel_export {
            catch_out_of_fuel!(
                &store,
                f.call(&mut *store, handle.offset as i64)
                    .context("failed to free extism memory")
            )?;
        } else {
            anyhow::bail!("unable to locate an extism kernel function: free",)
        }
        Ok(())
    }

    pub fn memory_length(&mut self, offs: u64) -> Result<u64, Error> {
        let kernel_export = self.kernel_typed::<i64, i64>("length");
        let (_, store) = self.linker_and_store();
        let output = &mut [Val::I64(0)];
        if let Some(f) = kernel_export {
            catch_out_of_fuel!(
                &store,
                f.call(&mut *store, offs as i64)
                    .map(|r| output[0] = Val::I64(r))
                    .context("failed to get length of extism memory handle")
            )?;
        } else {
            anyhow::bail!("unable to locate an extism kernel function: length",)
        }
        let len = output[0].unwrap_i64() as u64;
        trace!(
            plugin = self.id.to_string(),
            "memory_length({}) = {}",
            offs,
            len
        );
        Ok(len)
    }

    pub fn memory_length_unsafe(&mut self, offs: u64) -> Result<u64, Error> {
        let kernel_export = self.kernel_typed::<i64, i64>("length_unsafe");
        let (_, store) = self.linker_and_store();
        let output = &mut [Val::I64(0)];
        if let Some(f) = kernel_export {
            catch_out_of_fuel!(
                &store,
                f.call(&mut *store, offs as i64)
                    .map(|r| output[0] = Val::I64(r))
                    .context("failed to get length of extism memory using length_unsafe")
            )?;
        } else {
            anyhow::bail!("unable to locate an extism kernel function: length_unsafe",)
        }
        let len = output[0].unwrap_i64() as u64;
        trace!(
            plugin = self.id.to_string(),
            "memory_length_unsafe({}) = {}",
            offs,
            len
        );
        Ok(len)
    }

    /// Access a plugin's variables
    pub fn vars(&self) -> &std::collections::BTreeMap<String, Vec<u8>> {
        &self.vars
    }

    /// Mutable access to a plugin's variables
    pub fn vars_mut(&mut self) -> &mut std::collections::BTreeMap<String, Vec<u8>> {
        &mut self.vars
    }

    /// Plugin manifest
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn new(
        manifest: extism_manifest::Manifest,
        wasi: bool,
        available_pages: Option<u32>,
        allow_http_response_headers: bool,
        id: uuid::Uuid,
    ) -> Result<Self, Error> {
        let call_limits = std::sync::Arc::new(CallLimits::default());
        let wasi = if wasi {
            let auth = wasi_common::sync::ambient_authority();
            let random = wasi_common::sync::random_ctx();
            let clocks = wasi_common::sync::clocks_ctx();
            // kvs patch: sleeps and clock polls are bounded by the running call's deadline.
            let sched = Box::new(DeadlineSched {
                limits: call_limits.clone(),
                inner: wasi_common::sync::sched_ctx(),
            });
            let table = wasi_common::Table::new();
            let ctx = wasi_common::WasiCtx::new(random, clocks, sched, table);

            if let Some(a) = &manifest.allowed_paths {
                for (k, v) in a.iter() {
                    let readonly = k.starts_with("ro:");

                    let dir_path = if readonly { &k[3..] } else { k };

                    let dir = wasi_common::sync::dir::Dir::from_cap_std(
                        wasi_common::sync::Dir::open_ambient_dir(dir_path, auth)?,
                    );

                    let file: Box<dyn wasi_common::dir::WasiDir> = if readonly {
                        Box::new(readonly_dir::ReadOnlyDir::new(dir))
                    } else {
                        Box::new(dir)
                    };

                    ctx.push_preopened_dir(file, v)?;
                }
            }

            // Enable WASI output, typically used for debugging purposes
            if std::env::var("EXTISM_ENABLE_WASI_OUTPUT").is_ok() {
                ctx.set_stderr(Box::new(wasi_common::sync::stdio::stderr()));
                ctx.set_stdout(Box::new(wasi_common::sync::stdio::stdout()));
            }

            Some(Wasi { ctx })
        } else {
            None
        };

        let memory_limiter = if let Some(pgs) = available_pages {
            let n = pgs as usize * 65536;
            Some(MemoryLimiter {
                max_bytes: n,
                bytes_left: n,
            })
        } else {
            None
        };

        Ok(CurrentPlugin {
            wasi,
            manifest,
            http_status: 0,
            vars: BTreeMap::new(),
            linker: std::ptr::null_mut(),
            store: std::ptr::null_mut(),
            available_pages,
            memory_limiter,
            id,
            start_time: std::time::Instant::now(),
            kernel_exports: Vec::new(),
            kernel_typed: Vec::new(),
            call_limits,
            guest_memory: None,
            http_headers: if allow_http_response_headers {
                Some(BTreeMap::new())
            } else {
                None
            },
        })
    }

    /// Get a pointer to the plugin memory
    pub(crate) fn memory_ptr(&mut self) -> *mut u8 {
        if let Some(mem) = self.memory() {
            let (_, store) = self.linker_and_store();
            return mem.data_ptr(store);
        }

        std::ptr::null_mut()
    }

    /// kvs patch: the guest's own memory (the main module's export `memory`), not
    /// Extism's kernel memory: a host function can read its arguments there and write
    /// its results there directly. `None` before instantiation or without that export.
    pub fn guest_memory(&mut self) -> Option<&mut [u8]> {
        let memory = self.guest_memory?;
        let (_, store) = self.linker_and_store();
        Some(memory.data_mut(store))
    }

    /// kvs patch: the host function running now blocked for `waited` on something
    /// outside the guest (a write becoming durable): the call in progress is not
    /// charged for it, its deadline moves `waited` later — up to ten times the call's
    /// timeout in all, so a guest that keeps making its host wait still ends. The
    /// timeout is there to stop a guest that runs too long, not one whose host was slow
    /// to answer it.
    pub fn excuse_wait(&self, waited: std::time::Duration) {
        self.call_limits.excuse(waited);
    }

    /// Get extism memory
    pub(crate) fn memory(&mut self) -> Option<wasmtime::Memory> {
        self.kernel("memory")?.into_memory()
    }

    /// kvs patch: `linker.get(store, EXTISM_ENV_MODULE, name)`, memoized per store.
    pub(crate) fn kernel(&mut self, name: &'static str) -> Option<Extern> {
        if let Some((_, found)) = self.kernel_exports.iter().find(|(n, _)| *n == name) {
            return Some(found.clone());
        }
        let (linker, store) = self.linker_and_store();
        let found = linker.get(&mut *store, EXTISM_ENV_MODULE, name)?;
        self.kernel_exports.push((name, found.clone()));
        Some(found)
    }

    /// kvs patch: a kernel function as a `TypedFunc<P, R>`, memoized per store. `None` if
    /// the kernel has no such function or it has another type.
    /// Behind an `Arc`: cloning a `TypedFunc` bumps a reference count shared by every
    /// instance on the engine, which threads calling concurrently would fight over.
    pub(crate) fn kernel_typed<P, R>(
        &mut self,
        name: &'static str,
    ) -> Option<std::sync::Arc<TypedFunc<P, R>>>
    where
        P: WasmParams + 'static,
        R: WasmResults + 'static,
    {
        let cached = self.kernel_typed.iter().find(|(n, _)| *n == name);
        let cached = cached.and_then(|(_, f)| f.downcast_ref::<std::sync::Arc<TypedFunc<P, R>>>());
        if let Some(f) = cached {
            return Some(f.clone());
        }
        let func = self.kernel(name)?.into_func()?;
        let (_, store) = self.linker_and_store();
        let typed = std::sync::Arc::new(func.typed::<P, R>(&*store).ok()?);
        self.kernel_typed.push((name, Box::new(typed.clone())));
        Some(typed)
    }

    /// Get a `MemoryHandle` from a `Val` reference - this can be used to convert a host function's
    /// argument directly to `MemoryHandle`
    pub fn memory_from_val(&mut self, offs: &Val) -> Option<MemoryHandle> {
        let offs = offs.i64()? as u64;
        let length = self.memory_length(offs).unwrap_or_default();
        if length == 0 {
            return None;
        }
        Some(MemoryHandle {
            offset: offs,
            length,
        })
    }

    /// Get a `MemoryHandle` from a `Val` reference - this can be used to convert a host function's
    /// argument directly to `MemoryHandle`
    pub fn memory_to_val(&mut self, handle: MemoryHandle) -> Val {
        Val::I64(handle.offset() as i64)
    }

    /// Clear the current plugin error
    pub fn clear_error(&mut self) {
        trace!(plugin = self.id.to_string(), "CurrentPlugin::clear_error");
        let kernel_export = self.kernel_typed::<i64, ()>("error_set");
        let (_, store) = self.linker_and_store();
        if let Some(f) = kernel_export {
            let res = f.call(&mut *store, 0);
            if let Err(e) = res {
                error!(
                    plugin = self.id.to_string(),
                    "unable to clear error: {:?}", e
                );
            }
        }
    }

    /// Get the current error message
    pub fn get_error(&mut self) -> Option<&str> {
        let (offs, length) = self.get_error_position();
        if offs == 0 {
            return None;
        }

        let s = self.memory_str(MemoryHandle {
            offset: offs,
            length,
        });
        s.ok()
    }

    #[doc(hidden)]
    pub fn set_error(&mut self, s: impl AsRef<str>) -> Result<(u64, u64), Error> {
        let s = s.as_ref();
        debug!(plugin = self.id.to_string(), "set error: {:?}", s);
        let handle = self.memory_new(s)?;
        let kernel_export = self.kernel_typed::<i64, ()>("error_set");
        let (_, store) = self.linker_and_store();
        if let Some(f) = kernel_export {
            catch_out_of_fuel!(
                &store,
                f.call(&mut *store, handle.offset() as i64)
                    .context("failed to set extism error")
            )?;
            Ok((handle.offset(), s.len() as u64))
        } else {
            anyhow::bail!("extism:host/env::error_set not found");
        }
    }

    pub(crate) fn get_error_position(&mut self) -> (u64, u64) {
        let kernel_export = self.kernel_typed::<(), i64>("error_get");
        let (_, store) = self.linker_and_store();
        let output = &mut [Val::I64(0)];
        if let Some(f) = kernel_export {
            if let Err(e) = catch_out_of_fuel!(
                &store,
                f.call(&mut *store, ()).map(|r| output[0] = Val::I64(r))
            ) {
                error!(
                    plugin = self.id.to_string(),
                    "unable to call extism:host/env::error_get: {:?}", e
                );
                return (0, 0);
            }
        };
        let offs = output[0].unwrap_i64() as u64;
        let length = self.memory_length(offs).unwrap_or_default();
        (offs, length)
    }

    /// Returns the remaining time before a plugin will timeout, or
    /// `None` if no timeout is configured in the manifest
    pub fn time_remaining(&self) -> Option<std::time::Duration> {
        if let Some(x) = &self.manifest.timeout_ms {
            let elapsed = &self.start_time.elapsed().as_millis();
            let ms_left = x.saturating_sub(*elapsed as u64);
            return Some(std::time::Duration::from_millis(ms_left));
        }

        None
    }
}

impl Internal for CurrentPlugin {
    fn store(&self) -> &Store<CurrentPlugin> {
        unsafe { &*self.store }
    }

    fn store_mut(&mut self) -> &mut Store<CurrentPlugin> {
        unsafe { &mut *self.store }
    }

    fn linker_and_store(&mut self) -> (&mut Linker<CurrentPlugin>, &mut Store<CurrentPlugin>) {
        unsafe { (&mut *self.linker, &mut *self.store) }
    }
}

/// kvs patch: refuses a handle that does not lie wholly inside a kernel memory of `size`
/// bytes (guest-controlled offsets and lengths must never become out-of-bounds slices).
fn check_in_bounds(id: &uuid::Uuid, handle: &MemoryHandle, size: usize) -> Result<(), Error> {
    let end = handle.offset().checked_add(handle.len() as u64);
    if end.is_none_or(|end| end > size as u64) {
        anyhow::bail!(
            "{id} memory handle out of bounds: offset {}, length {}, kernel memory {size} bytes",
            handle.offset(),
            handle.len()
        );
    }
    Ok(())
}

/// kvs patch: what a blocking WASI call may take while a call (or an instantiation)
/// runs. Epoch interruption stops only running WebAssembly code, never a host function
/// blocked in `sleep` or `poll_oneoff`, so without this a guest's `thread::sleep` would
/// outlast its timeout and hold its thread (and the worker it runs on) for as long as
/// it liked.
#[derive(Default)]
pub(crate) struct CallLimits {
    state: std::sync::Mutex<CallLimitsState>,
}

/// kvs patch: the most a call's deadline can be moved by `excuse_wait`, in multiples of
/// the time it had when it began (its timeout): a host's waits are not the guest's
/// doing, but a guest that keeps making the host wait must still end.
const MAX_EXCUSED_TIMEOUTS: u32 = 10;

#[derive(Default)]
struct CallLimitsState {
    deadline: Option<std::time::Instant>,
    /// How much later `excuse` may still move `deadline`.
    excusable: std::time::Duration,
    /// Taken by the epoch callback once the call has run for `after`.
    hook: Option<std::sync::Arc<crate::plugin_builder::LongCallHook>>,
    /// The hook's `after` and `wrap_wait`, for WASI waits during the call.
    wrap_wait: Option<(std::time::Duration, WrapWait)>,
}

impl CallLimits {
    /// A call (or an instantiation) starts: these limits hold until `end`.
    pub(crate) fn begin(
        &self,
        deadline: Option<std::time::Instant>,
        hook: Option<std::sync::Arc<crate::plugin_builder::LongCallHook>>,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.deadline = deadline;
        state.excusable = deadline.map_or(std::time::Duration::ZERO, |d| {
            d.saturating_duration_since(std::time::Instant::now()) * MAX_EXCUSED_TIMEOUTS
        });
        state.wrap_wait = hook.as_ref().map(|h| (h.after, h.wrap_wait.clone()));
        state.hook = hook;
    }

    pub(crate) fn end(&self) {
        self.begin(None, None);
    }

    /// The call's deadline now (`excuse` moves it).
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).deadline
    }

    /// Moves the call's deadline `waited` later (see `CurrentPlugin::excuse_wait`), up to
    /// `MAX_EXCUSED_TIMEOUTS` timeouts in all.
    pub(crate) fn excuse(&self, waited: std::time::Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let granted = waited.min(state.excusable);
        state.excusable -= granted;
        state.deadline = state.deadline.map(|d| d + granted);
    }

    /// The long-call hook, if it has not run yet in this call.
    pub(crate) fn take_hook(&self) -> Option<std::sync::Arc<crate::plugin_builder::LongCallHook>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).hook.take()
    }

    /// Before blocking for `wait`: how the guest may wait. A wait of at least the hook's
    /// `after` runs inside the hook's `wrap_wait` (the long-call hook itself is left for
    /// the epoch callback: it is meant for code that keeps running, and a wait is known
    /// to block for its whole length).
    fn plan_wait(&self, wait: std::time::Duration) -> Wait {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let wrap = state
            .wrap_wait
            .as_ref()
            .filter(|(after, _)| wait >= *after)
            .map(|(_, wrap)| wrap.clone());
        let left = state
            .deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()));
        match left {
            Some(left) if wait > left => Wait::PastDeadline { left, wrap },
            _ => Wait::Within { wrap },
        }
    }
}

/// kvs patch: how a WASI wait proceeds (`CallLimits::plan_wait`).
enum Wait {
    /// It would end past the call's deadline: wait `left`, then end the call.
    PastDeadline {
        left: std::time::Duration,
        wrap: Option<WrapWait>,
    },
    /// It ends before the deadline (or there is none).
    Within { wrap: Option<WrapWait> },
}

type WrapWait = std::sync::Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

/// kvs patch: blocks the thread for `duration`, inside `wrap` if there is one.
fn block_for(duration: std::time::Duration, wrap: Option<WrapWait>) {
    match wrap {
        Some(wrap) => wrap(&mut || std::thread::sleep(duration)),
        None => std::thread::sleep(duration),
    }
}

/// kvs patch: the WASI scheduler, with every wait bounded by the running call's
/// deadline: a wait that would end past it sleeps until the deadline and then ends the
/// call as a timeout (the same `Trap::Interrupt` the epoch callback raises). A long wait
/// runs inside the long-call hook's `wrap_wait`.
struct DeadlineSched {
    limits: std::sync::Arc<CallLimits>,
    inner: Box<dyn wasi_common::WasiSched>,
}

impl DeadlineSched {
    fn timed_out(left: std::time::Duration, wrap: Option<WrapWait>) -> wasi_common::Error {
        block_for(left, wrap);
        wasi_common::Error::trap(wasmtime::Error::from(wasmtime::Trap::Interrupt))
    }
}

#[async_trait::async_trait]
impl wasi_common::WasiSched for DeadlineSched {
    async fn poll_oneoff<'a>(
        &self,
        poll: &mut wasi_common::sched::Poll<'a>,
    ) -> Result<(), wasi_common::Error> {
        // Files in a granted directory are always ready, and a guest has no other
        // descriptors to poll: only a clock can make this wait.
        if poll.rw_subscriptions().next().is_none() {
            if let Some(clock) = poll.earliest_clock_deadline() {
                let wait = clock.duration_until().unwrap_or_default();
                match self.limits.plan_wait(wait) {
                    Wait::PastDeadline { left, wrap } => {
                        return Err(Self::timed_out(left, wrap));
                    }
                    // Waits here; the inner poll then finds the clock already due.
                    Wait::Within { wrap: Some(wrap) } => block_for(wait, Some(wrap)),
                    Wait::Within { wrap: None } => {}
                }
            }
        }
        self.inner.poll_oneoff(poll).await
    }

    async fn sched_yield(&self) -> Result<(), wasi_common::Error> {
        self.inner.sched_yield().await
    }

    async fn sleep(&self, duration: std::time::Duration) -> Result<(), wasi_common::Error> {
        match self.limits.plan_wait(duration) {
            Wait::PastDeadline { left, wrap } => Err(Self::timed_out(left, wrap)),
            Wait::Within { wrap: Some(wrap) } => {
                block_for(duration, Some(wrap));
                Ok(())
            }
            Wait::Within { wrap: None } => self.inner.sleep(duration).await,
        }
    }
}
