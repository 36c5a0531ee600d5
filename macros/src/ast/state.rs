//! The struct of `#[derive(ModuleState)]`: its device and the role of each field.

use syn::{Data, DeriveInput, Fields, Ident, Type};

use super::{built_parts, device_param, is_plain_data, Device};
use crate::attr;
use crate::ctxt::Ctxt;

// ---------------------------------------------------------------------------------------------------
// #[derive(ModuleState)]

pub struct State<'a> {
    pub input: &'a DeriveInput,
    pub device: Device,
    pub fields: Vec<StateField<'a>>,
    /// `#[module_state(build = path)]`: the user's function behind `from_hparams`.
    pub build: Option<syn::ExprPath>,
}

pub struct StateField<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    pub role: Role,
}

pub enum Role {
    /// Anything else: a dfdx module (`Built<M, D>`, an alias, `Linear<I, O, f32, D>`) or a struct that
    /// derives `ModuleState` too. What it is, rustc tells through the `ModuleField` bound spanned on the
    /// type; the spelling decides nothing.
    Module,
    /// `#[hparams]`.
    Hparams,
    /// `#[skip]`.
    Skip,
}

impl<'a> State<'a> {
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let mut build = None;
        for a in &input.attrs {
            if attr::is(a, "module_state") {
                match attr::parse_module_state(cx, a) {
                    Some(_) if build.is_some() => cx.error_at(
                        attr::path_span(a),
                        "duplicate `#[module_state]`, give all its arguments in one",
                    ),
                    Some(path) => build = Some(path),
                    None => {}
                }
            }
            for name in ["hparams", "skip"] {
                if attr::is(a, name) {
                    cx.error_at(
                        attr::path_span(a),
                        format!("`#[{name}]` goes on a field of the struct, not on the struct"),
                    );
                }
            }
        }
        let named = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) => Some(named),
                Fields::Unnamed(f) => {
                    cx.error_spanned_by(
                        f,
                        "`#[derive(ModuleState)]` needs named fields: each field's name becomes the prefix of its parameters",
                    );
                    None
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "`#[derive(ModuleState)]` needs a struct with named fields",
                    );
                    None
                }
            },
            Data::Enum(e) => {
                cx.error_spanned_by(
                    e.enum_token,
                    "`#[derive(ModuleState)]` needs a struct with named fields, not an enum",
                );
                None
            }
            Data::Union(u) => {
                cx.error_spanned_by(
                    u.union_token,
                    "`#[derive(ModuleState)]` needs a struct with named fields, not a union",
                );
                None
            }
        };
        let param = device_param(cx, &input.generics, "a `ModuleState` struct");
        let named = named?;
        let mut fields = Vec::new();
        let mut hparams: Option<&Ident> = None;
        for field in &named.named {
            let ident = field.ident.as_ref()?;
            let mut role = None;
            for a in &field.attrs {
                if attr::is(a, "module_state") {
                    cx.error_at(
                        attr::path_span(a),
                        "`#[module_state]` goes on the struct, not on a field",
                    );
                    continue;
                }
                let name = if attr::is(a, "hparams") {
                    "hparams"
                } else if attr::is(a, "skip") {
                    "skip"
                } else {
                    continue;
                };
                attr::parse_flag(cx, a, name);
                if role.is_some() {
                    cx.error_at(
                        attr::path_span(a),
                        format!(
                            "`#[{name}]` cannot be combined with another role on field `{ident}`"
                        ),
                    );
                    continue;
                }
                if name == "hparams" {
                    if let Some(first) = hparams {
                        cx.error_at(
                            attr::path_span(a),
                            format!(
                                "only one field can be `#[hparams]`, `{first}` is already: group the hyperparameters in one struct"
                            ),
                        );
                        // Reported; keep the field out of the other checks.
                        role = Some(Role::Skip);
                        continue;
                    }
                    hparams = Some(ident);
                    role = Some(Role::Hparams);
                } else {
                    role = Some(Role::Skip);
                }
            }
            let role = role.unwrap_or(Role::Module);
            if matches!(role, Role::Module) && is_plain_data(&field.ty) {
                cx.error_spanned_by(
                    &field.ty,
                    format!(
                        "field `{ident}` is neither a dfdx module (`Built<M, D>`) nor a struct deriving `ModuleState`: \
                         mark it `#[skip]` (rebuilt with `Default`) or keep it in the `#[hparams]` struct"
                    ),
                );
            }
            fields.push(StateField {
                ident,
                ty: &field.ty,
                role,
            });
        }
        let device = match param.ok()? {
            Some(ident) => Device::Param(ident),
            None => {
                let concrete = fields.iter().find_map(|f| match f.role {
                    Role::Module => built_parts(f.ty).map(|(_, d)| d),
                    _ => None,
                });
                match concrete {
                    Some(ty) => Device::Concrete(Box::new(ty)),
                    None => {
                        cx.error_spanned_by(
                            &input.ident,
                            "cannot tell the device of this module: give it a device parameter \
                             (`struct Name<D: Backend>`) or a `Built<M, Cpu>` field",
                        );
                        return None;
                    }
                }
            }
        };
        Some(State {
            input,
            device,
            fields,
            build,
        })
    }

    pub fn hparams(&self) -> Option<&StateField<'a>> {
        self.fields.iter().find(|f| matches!(f.role, Role::Hparams))
    }
}
