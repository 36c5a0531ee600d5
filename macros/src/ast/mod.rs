//! Typed models of the annotated items: the struct of `#[derive(ModuleState)]` and the impl block of
//! `#[lightning_module]`. Building a model reports what makes the item impossible to model (a tuple
//! struct, a step the runtime cannot call); `check.rs` applies the rules between its parts.

mod module;
mod signature;
mod state;

pub use module::{HookKind, Metric, Module, Returned, Source, Stage, Step, StepArg, StepKind};
pub use state::{Role, State};

use syn::{GenericArgument, GenericParam, Generics, Ident, PathArguments, Type};

use crate::ctxt::Ctxt;

// ---------------------------------------------------------------------------------------------------
// The device

/// The device a module is generic over, or the concrete device its fields name.
#[derive(Clone)]
pub enum Device {
    /// `struct M<D: Backend>`: the parameter.
    Param(Ident),
    /// `struct M { net: Built<Mlp, Cpu> }`: the type.
    Concrete(Box<Type>),
}

impl Device {
    pub fn ty(&self) -> Type {
        match self {
            Device::Param(ident) => syn::parse_quote!(#ident),
            Device::Concrete(ty) => (**ty).clone(),
        }
    }
}

/// The device parameter of `generics`: `Ok(Some)` for exactly one type parameter, `Ok(None)` for none.
/// Lifetimes and a second type parameter are errors (const parameters are kept as they are).
fn device_param(cx: &Ctxt, generics: &Generics, what: &str) -> Result<Option<Ident>, ()> {
    let mut found: Option<Ident> = None;
    let mut ok = true;
    for param in &generics.params {
        match param {
            GenericParam::Lifetime(l) => {
                cx.error_spanned_by(
                    &l.lifetime,
                    format!("{what} cannot have lifetime parameters: a module owns its data (`'static`)"),
                );
                ok = false;
            }
            GenericParam::Type(t) => match &found {
                None => found = Some(t.ident.clone()),
                Some(first) => {
                    cx.error_spanned_by(
                        &t.ident,
                        format!(
                            "{what} takes one type parameter, the device (`{first}`), found a second one `{}`",
                            t.ident
                        ),
                    );
                    ok = false;
                }
            },
            GenericParam::Const(_) => {}
        }
    }
    if ok {
        Ok(found)
    } else {
        Err(())
    }
}

/// Last path segment of a type and its angle-bracketed type arguments: `Built<Mlp, D>` → (`Built`, [Mlp, D]).
pub(crate) fn path_parts(ty: &Type) -> Option<(&Ident, Vec<&Type>)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    let args = match &last.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((&last.ident, args))
}

/// Types that are plainly no module: scalars, strings, collections, smart pointers, tuples, references.
fn is_plain_data(ty: &Type) -> bool {
    match ty {
        Type::Tuple(_) | Type::Array(_) | Type::Slice(_) | Type::Reference(_) | Type::Ptr(_) => {
            true
        }
        Type::Path(_) => path_parts(ty).is_some_and(|(ident, _)| {
            matches!(
                ident.to_string().as_str(),
                "bool"
                    | "char"
                    | "str"
                    | "String"
                    | "f32"
                    | "f64"
                    | "i8"
                    | "i16"
                    | "i32"
                    | "i64"
                    | "i128"
                    | "isize"
                    | "u8"
                    | "u16"
                    | "u32"
                    | "u64"
                    | "u128"
                    | "usize"
                    | "Vec"
                    | "VecDeque"
                    | "Option"
                    | "Box"
                    | "Rc"
                    | "Arc"
                    | "Cell"
                    | "RefCell"
                    | "Mutex"
                    | "RwLock"
                    | "HashMap"
                    | "BTreeMap"
                    | "HashSet"
                    | "BTreeSet"
                    | "PathBuf"
                    | "Duration"
                    | "Instant"
            )
        }),
        _ => false,
    }
}

/// `Built<M, D>` → (M, D).
fn built_parts(ty: &Type) -> Option<(Type, Type)> {
    match path_parts(ty)? {
        (ident, args) if ident == "Built" && args.len() == 2 => {
            Some((args[0].clone(), args[1].clone()))
        }
        _ => None,
    }
}
