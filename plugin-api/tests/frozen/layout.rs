//! A deterministic text dump of abi_stable type layouts: each type reachable from the
//! roots, once, one line per property, field, method and variant, so that a diff names
//! the type and the line that changed.
//!
//! Printed: the type's name, module path, package (with the part of its version
//! abi_stable compares: the major, or `0.minor`), size, alignment, `repr`, kind
//! (struct, union, enum, prefix type, primitive, opaque), non-zero-ness, reflection
//! mode, generic parameters (lifetimes, types, consts), tag and extra checks, phantom
//! fields, and then its fields in order, each with its type, how it is accessed, the
//! lifetimes it uses and the function pointers in it (parameter names and types,
//! return type, `unsafe`, bound lifetimes); for a prefix type (a root module or a
//! `#[sabi_trait]` vtable) which field is the `last_prefix_field`, which prefix fields
//! are conditional and which are accessible; for an enum its variants, discriminants,
//! exhaustiveness and fields.
//!
//! Not printed, because they change without the layout changing: the source line a
//! type is defined on, the patch (and, from 1.0, minor) part of its package version,
//! and abi_stable's run-time type ids.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use abi_stable::std_types::UTypeId;
use abi_stable::type_layout::{
    TLData, TLEnum, TLField, TLFunction, TLPrefixType, TLPrimitive, Tag, TypeLayout,
};

/// The layouts reachable from `roots`, as text: the roots first (in the order given),
/// then every other type sorted by its name.
pub fn dump(roots: &[&'static TypeLayout]) -> Dump {
    // Every type reachable, once (by abi_stable's type id: names come later).
    let mut nodes: HashMap<UTypeId, &'static TypeLayout> = HashMap::new();
    let mut pending: Vec<&'static TypeLayout> = roots.to_vec();
    while let Some(layout) = pending.pop() {
        if nodes.insert(layout.get_utypeid(), layout).is_none() {
            pending.extend(reachable(layout));
        }
    }
    let names = Names::of(&nodes);
    let mut types = BTreeMap::new();
    for layout in nodes.values() {
        let name = names.of_layout(layout).to_string();
        let lines = describe(layout, &names);
        if let Some(other) = types.insert(name.clone(), lines.clone()) {
            // Two types that read alike in every line are one type to a reader.
            assert_eq!(other, lines, "two different types are both named {name}");
        }
    }
    Dump {
        roots: roots
            .iter()
            .map(|l| names.of_layout(l).to_string())
            .collect(),
        types,
    }
}

/// Every type `layout` mentions: its fields' types, the parameter and return types of
/// its function pointers, its generic arguments, and whatever else abi_stable keeps
/// in its shared variables.
fn reachable(layout: &'static TypeLayout) -> Vec<&'static TypeLayout> {
    let mut out: Vec<&'static TypeLayout> = Vec::new();
    let field = |f: TLField, out: &mut Vec<&'static TypeLayout>| {
        out.push(f.layout());
        for function in f.function_range().iter() {
            out.extend(function.param_type_layouts.iter().map(|t| t()));
            out.extend(function.return_type_layout().map(|t| t()));
        }
    };
    for f in all_fields(layout) {
        field(f, &mut out);
    }
    out.extend(layout.generics().type_params().iter().map(|t| t()));
    out.extend(layout.shared_vars().type_layouts().iter().map(|t| t()));
    out
}

/// Phantom fields, then the fields of the struct, union, enum (all variants) or
/// prefix type.
fn all_fields(layout: &'static TypeLayout) -> Vec<TLField> {
    let mut out: Vec<TLField> = layout.phantom_fields().iter().collect();
    match layout.data() {
        TLData::Struct { fields } | TLData::Union { fields } => out.extend(fields.iter()),
        TLData::Enum(e) => out.extend(e.fields.iter()),
        TLData::PrefixType(p) => out.extend(p.fields.iter()),
        TLData::Primitive(_) | TLData::Opaque => {}
    }
    out
}

/// Names for types, unique within a dump.
///
/// A type's name is its module path and name, with its generic arguments named
/// likewise. abi_stable records the generic arguments of few types (pointers,
/// `PhantomData`, `PrefixRef`; not those of derived types such as `RVec<T>` or a
/// `#[sabi_trait]` object's `_TO<'lt, P>`), so where two types would read alike the
/// name goes on with what tells them apart: `{..}`, what the fields in which they
/// differ hold (wrappers such as `PhantomData` and pointers taken off; a function
/// pointer by its signature), e.g. `RVec{u8}`. Types that still read alike print
/// alike, line for line (asserted), so they are one type to a reader.
pub struct Names {
    names: HashMap<UTypeId, String>,
}

impl Names {
    fn of(nodes: &HashMap<UTypeId, &'static TypeLayout>) -> Names {
        let mut names = Names {
            names: nodes
                .iter()
                .map(|(id, l)| (*id, base_name(l, None)))
                .collect(),
        };
        for _ in 0..32 {
            // The types that read alike, by name.
            let mut groups: HashMap<String, Vec<UTypeId>> = HashMap::new();
            for (id, l) in nodes {
                groups
                    .entry(base_name(l, Some(&names)))
                    .or_default()
                    .push(*id);
            }
            let mut next = HashMap::new();
            for (base, ids) in groups {
                let members: Vec<(UTypeId, Vec<String>)> = ids
                    .iter()
                    .map(|id| (*id, names.field_types(nodes[id])))
                    .collect();
                let same_shape = members.iter().all(|(_, f)| f.len() == members[0].1.len());
                for (id, fields) in &members {
                    if members.len() == 1 {
                        next.insert(*id, base.clone());
                        continue;
                    }
                    // Where the members differ (all fields if their shapes differ),
                    // what those fields hold, without the wrappers around it.
                    let mut args: Vec<String> = Vec::new();
                    for (i, field) in fields.iter().enumerate() {
                        let differs = !same_shape || members.iter().any(|(_, f)| &f[i] != field);
                        let arg = unwrap(field).to_string();
                        if differs && !args.contains(&arg) {
                            args.push(arg);
                        }
                    }
                    let name = if args.is_empty() {
                        base.clone()
                    } else {
                        format!("{base}{{{}}}", args.join(", "))
                    };
                    next.insert(*id, name);
                }
            }
            if next == names.names {
                break;
            }
            names.names = next;
        }
        names
    }

    /// The types of a type's fields (phantom ones first), as [`Names::field_type`].
    fn field_types(&self, layout: &'static TypeLayout) -> Vec<String> {
        all_fields(layout)
            .iter()
            .map(|f| self.field_type(f))
            .collect()
    }

    fn of_layout(&self, layout: &'static TypeLayout) -> &str {
        &self.names[&layout.get_utypeid()]
    }

    /// A field's type: its function pointer's signature if it is one, else its name.
    fn field_type(&self, field: &TLField) -> String {
        let functions: Vec<TLFunction> = field.function_range().iter().collect();
        match functions.as_slice() {
            [f] if field.is_function() => self.function(f),
            _ => self.of_layout(field.layout()).to_string(),
        }
    }

    /// `fn(name: Type, ..) -> Type`, with `unsafe`, bound lifetimes and the lifetimes
    /// the parameters and return type use.
    fn function(&self, f: &TLFunction) -> String {
        // abi_stable 0.11 separates them with `,` (its docs say `;`).
        let names: Vec<&str> = f.param_names.as_str().split([',', ';']).collect();
        let params: Vec<String> = f
            .param_type_layouts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = names.get(i).copied().unwrap_or("");
                format!("{name}: {}", self.of_layout(t()))
            })
            .collect();
        let returns = f
            .return_type_layout()
            .map_or("()".to_string(), |t| self.of_layout(t()).to_string());
        let mut text = String::new();
        if f.fn_qualifs.is_unsafe() {
            text.push_str("unsafe ");
        }
        if !f.bound_lifetimes.is_empty() {
            write!(
                text,
                "for<{}> ",
                f.bound_lifetimes.as_str().replace(';', ", ")
            )
            .unwrap();
        }
        write!(text, "fn({}) -> {returns}", params.join(", ")).unwrap();
        let lifetimes = f.paramret_lifetime_indices.as_slice();
        if !lifetimes.is_empty() {
            write!(text, " [lifetimes {lifetimes:?}]").unwrap();
        }
        text
    }
}

/// The type's name with its module path and the generic arguments abi_stable records
/// (named by `names`, or recursively when there are none yet).
fn base_name(layout: &'static TypeLayout, names: Option<&Names>) -> String {
    let generics = layout.generics();
    let lifetimes: Vec<String> = generics.lifetimes().map(str::to_string).collect();
    let types: Vec<String> = generics
        .type_params()
        .iter()
        .map(|t| match names {
            Some(names) => names.of_layout(t()).to_string(),
            None => qualified(t(), &mut Vec::new()),
        })
        .collect();
    let consts: Vec<String> = generics
        .const_params()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    let primitive = match layout.data() {
        TLData::Primitive(p) => Some(p),
        _ => None,
    };
    match (primitive, types.as_slice()) {
        (Some(TLPrimitive::SharedRef), [t]) => format!("&{} {t}", lifetimes.join(" ")),
        (Some(TLPrimitive::MutRef), [t]) => format!("&{} mut {t}", lifetimes.join(" ")),
        (Some(TLPrimitive::ConstPtr), [t]) => format!("*const {t}"),
        (Some(TLPrimitive::MutPtr), [t]) => format!("*mut {t}"),
        (Some(TLPrimitive::Array), [t]) => format!("[{t}; {}]", consts.join(", ")),
        _ => {
            let path = layout.mod_path().to_string();
            let name = if path.starts_with('<') {
                layout.name().to_string()
            } else {
                format!("{path}::{}", layout.name())
            };
            let params: Vec<String> = lifetimes.into_iter().chain(types).chain(consts).collect();
            if params.is_empty() {
                name
            } else {
                format!("{name}<{}>", params.join(", "))
            }
        }
    }
}

/// What a wrapper type (`PhantomData`, `NonNull`, `ManuallyDrop`, a pointer or a
/// reference) around `name` holds, all wrappers off.
fn unwrap(mut name: &str) -> &str {
    loop {
        let inner = [
            "std::marker::PhantomData<",
            "std::ptr::NonNull<",
            "std::mem::ManuallyDrop<",
        ]
        .iter()
        .find_map(|w| name.strip_prefix(w).and_then(|n| n.strip_suffix('>')))
        .or_else(|| {
            ["*const ", "*mut ", "&'a mut ", "&'a "]
                .iter()
                .find_map(|w| name.strip_prefix(w))
        });
        match inner {
            Some(inner) => name = inner,
            None => return name,
        }
    }
}

/// [`base_name`] all the way down, for the first round of naming.
fn qualified(layout: &'static TypeLayout, stack: &mut Vec<UTypeId>) -> String {
    let id = layout.get_utypeid();
    if stack.contains(&id) {
        return format!("{}<..recursive>", layout.name());
    }
    stack.push(id);
    let generics = layout.generics();
    let inner: Vec<String> = generics
        .type_params()
        .iter()
        .map(|t| qualified(t(), stack))
        .collect();
    stack.pop();
    // Render with the inner names substituted: the same as base_name's rendering.
    let names = Names {
        names: generics
            .type_params()
            .iter()
            .zip(inner)
            .map(|(t, n)| (t().get_utypeid(), n))
            .collect(),
    };
    base_name(layout, Some(&names))
}

/// What [`dump`] found: the roots' names and every type's lines.
pub struct Dump {
    /// The roots' names.
    pub roots: Vec<String>,
    /// Every type by name: its lines (without the `type` header).
    pub types: BTreeMap<String, Vec<String>>,
}

/// The lines describing one type (no header).
fn describe(layout: &'static TypeLayout, names: &Names) -> Vec<String> {
    let mut lines = Vec::new();
    let (package, version) = layout.package_and_version();
    // What abi_stable compares of a version: the major, or for 0.x the minor.
    let compared = match version.parsed() {
        Ok(v) if v.major == 0 => format!("0.{}", v.minor),
        Ok(v) => v.major.to_string(),
        Err(_) => format!("unparsed {version}"),
    };
    lines.push(format!(
        "name {}; module {}; package {} (version {compared}.x)",
        layout.name(),
        layout.mod_path(),
        package.as_str(),
    ));
    lines.push(format!(
        "size {}; align {}; repr {:?}; kind {:?}; nonzero {}; reflection {:?}",
        layout.size(),
        layout.alignment(),
        layout.repr_attr(),
        layout.data_discriminant(),
        layout.is_nonzero(),
        layout.mod_refl_mode(),
    ));
    let generics = layout.generics();
    let lifetimes: Vec<&str> = generics.lifetimes().collect();
    let types: Vec<&str> = generics
        .type_params()
        .iter()
        .map(|t| names.of_layout(t()))
        .collect();
    let consts: Vec<String> = generics
        .const_params()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    lines.push(format!(
        "generics: lifetimes [{}]; types [{}]; consts [{}]",
        lifetimes.join(", "),
        types.join(", "),
        consts.join(", ")
    ));
    let tag = layout.tag();
    if *tag != Tag::null() {
        lines.push(format!("tag {}", one_line(&tag.to_string())));
    }
    if let Some(checks) = layout.extra_checks() {
        lines.push(format!("extra checks {}", one_line(&format!("{checks:?}"))));
    }
    for (i, field) in layout.phantom_fields().iter().enumerate() {
        lines.push(field_line("phantom field", i, &field, names));
    }
    match layout.data() {
        TLData::Primitive(p) => lines.push(format!("primitive {p:?}")),
        TLData::Opaque => lines.push("opaque".into()),
        TLData::Struct { fields } | TLData::Union { fields } => {
            for (i, field) in fields.iter().enumerate() {
                lines.push(field_line("field", i, &field, names));
            }
        }
        TLData::Enum(e) => enum_lines(&mut lines, &e, names),
        TLData::PrefixType(p) => prefix_lines(&mut lines, &p, names),
    }
    lines
}

/// ``{what} #{i} `name`: Type; accessor ..; lifetimes ..``, where a function pointer's
/// type is its signature (and a field holding several lists them).
fn field_line(what: &str, i: usize, field: &TLField, names: &Names) -> String {
    let functions: Vec<TLFunction> = field.function_range().iter().collect();
    let mut line = format!(
        "{what} #{i} `{}`: {}; accessor {:?}; lifetimes {:?}",
        field.name(),
        names.field_type(field),
        field.field_accessor(),
        field.lifetime_indices().as_slice(),
    );
    if !(field.is_function() && functions.len() == 1) {
        for (j, function) in functions.iter().enumerate() {
            write!(
                line,
                "; fn #{j} `{}`: {}",
                function.name.as_str(),
                names.function(function)
            )
            .unwrap();
        }
    }
    line
}

fn enum_lines(lines: &mut Vec<String>, e: &TLEnum, names: &Names) {
    lines.push(format!(
        "enum: {} variants; exhaustive {}; discriminants {:?} ({:?})",
        e.variant_count(),
        e.exhaustiveness.is_exhaustive(),
        e.discriminants,
        e.discriminants.discriminant_repr(),
    ));
    if let Some(ne) = e.exhaustiveness.as_nonexhaustive() {
        lines.push(format!("nonexhaustive {}", one_line(&format!("{ne:?}"))));
    }
    let mut fields = e.fields.iter();
    for (v, (name, count)) in e.variant_names_iter().zip(e.field_count.iter()).enumerate() {
        lines.push(format!("variant #{v} `{name}`: {count} fields"));
        for i in 0..usize::from(*count) {
            match fields.next() {
                Some(field) => {
                    lines.push(field_line(&format!("variant #{v} field"), i, &field, names))
                }
                None => lines.push(format!("variant #{v} field #{i}: missing")),
            }
        }
    }
}

/// A prefix type (a root module, a `#[sabi_trait]` vtable): which field is the last
/// of the prefix, then its fields; a function-pointer field is a `method`.
fn prefix_lines(lines: &mut Vec<String>, p: &TLPrefixType, names: &Names) {
    let first_suffix = usize::from(p.first_suffix_field);
    let last_prefix = first_suffix
        .checked_sub(1)
        .and_then(|i| p.fields.get(i))
        .map_or("(none)".to_string(), |f| format!("`{}`", f.name()));
    let accessible: Vec<String> = p
        .accessible_fields
        .iter()
        .take(p.fields.len())
        .map(|a| format!("{a:?}"))
        .collect();
    lines.push(format!(
        "prefix type: last_prefix_field {last_prefix} (first_suffix_field {first_suffix}); \
         conditional prefix fields {:#b}; accessible [{}]",
        p.conditional_prefix_fields.bits(),
        accessible.join(", "),
    ));
    for (i, field) in p.fields.iter().enumerate() {
        let what = if field.is_function() {
            "method"
        } else {
            "field"
        };
        lines.push(field_line(what, i, &field, names));
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
