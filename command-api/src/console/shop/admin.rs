//! The shop's admin pages: `/app/admin/products` (the catalog with retired products
//! and stock, and the form that adds one), `/app/admin/products/{id}` (change the
//! name, description, price or image; adjust the stock with a reason; retire) and
//! `/app/admin/purchases` (every purchase, filtered by status and buyer, with Ship,
//! Deliver and Cancel buttons as its status allows). Administrators and auditors
//! read them; only administrators see the forms and buttons, and a post by anyone
//! else is the 403 page before anything is read from it. Reads and changes go
//! through `http::products` and `http::purchases`, as the JSON routes' do.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use orders_domain::ids::{ProductId, PurchaseId};
use orders_domain::user::Role;
use orders_projectors::query::products::ProductRow;
use orders_projectors::View;
use serde::Deserialize;

use super::purchases::list_refusal;
use super::refusal_text;
use super::templates::{
    status_buttons, status_options, AdminProductPage, AdminProductsPage, AdminPurchaseLine,
    AdminPurchasesPage, PurchaseSummary, StockLine,
};
use crate::console::admin::{admin_chrome, refusal_page};
use crate::console::pages::{page, ErrorPage, Field, Form as PageForm};
use crate::console::session::SignedIn;
use crate::console::{caller, see_other, see_result, CsrfOnly};
use crate::http::products::{
    add_product_as, amount_text, catalog_page, change_catalog_as, new_product_request,
    product_change_request, AddProductRequest, CatalogChange, CatalogParams, ChangeProductRequest,
};
use crate::http::purchases::{purchases_page, set_status_as, PurchaseListParams};
use crate::http::RequestContext;
use crate::problem::ApiError;
use crate::AppState;

/// A form's field as the admin pages lay them out.
fn field(
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    required: bool,
    value: String,
) -> Field {
    Field {
        name,
        label,
        hint,
        kind: "text",
        required,
        value,
        error: None,
    }
}

/// Refuses a post by anyone but an administrator (the 403 page), before its form
/// is read: an auditor's post is refused, not answered with a form's error.
async fn require_admin(state: &AppState, session: &SignedIn) -> Result<(), ErrorPage> {
    crate::http::admin::require_role(state, caller(session), &[Role::Admin])
        .await
        .map_err(refusal_page)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ProductsQuery {
    q: Option<String>,
    cursor: Option<String>,
    at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AddForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    sku: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    image_url: String,
    #[serde(default)]
    stock: String,
}

fn add_form(typed: &AddForm) -> PageForm {
    PageForm {
        fields: vec![
            field(
                "sku",
                "SKU",
                "letters, digits, - _ .; unique",
                true,
                typed.sku.clone(),
            ),
            field("name", "Name", "", true, typed.name.clone()),
            field("price", "Price", "e.g. 29.99", true, typed.price.clone()),
            field(
                "currency",
                "Currency",
                "ISO code, e.g. UAH, EUR, USD",
                true,
                typed.currency.clone(),
            ),
            field(
                "description",
                "Description",
                "optional",
                false,
                typed.description.clone(),
            ),
            field(
                "image_url",
                "Image",
                "optional https:// address",
                false,
                typed.image_url.clone(),
            ),
            field(
                "stock",
                "Units on hand",
                "0 when left empty",
                false,
                typed.stock.clone(),
            ),
        ],
        error: None,
    }
}

pub(super) async fn products(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<ProductsQuery>,
) -> Result<Response, ErrorPage> {
    let template = products_template(
        &state,
        &session,
        &params,
        add_form(&AddForm {
            currency: "UAH".to_owned(),
            ..AddForm::default()
        }),
    )
    .await?;
    Ok(page(StatusCode::OK, &template))
}

async fn products_template(
    state: &AppState,
    session: &SignedIn,
    params: &ProductsQuery,
    form: PageForm,
) -> Result<AdminProductsPage, ErrorPage> {
    let (chrome, is_admin) =
        admin_chrome(state, session, &[View::Products], params.at.as_deref()).await?;
    let q = params.q.clone().unwrap_or_default().trim().to_owned();
    let found = catalog_page(
        state,
        &CatalogParams {
            q: Some(q.clone()).filter(|q| !q.is_empty()),
            limit: None,
            cursor: params.cursor.clone().filter(|cursor| !cursor.is_empty()),
        },
        true,
    )
    .await
    .map_err(list_refusal)?;
    Ok(AdminProductsPage {
        chrome,
        is_admin,
        q,
        products: found.items.iter().map(StockLine::from).collect(),
        next_cursor: found.next_cursor,
        form,
    })
}

/// The add form: the API's checks (`new_product_request`) and command; a refusal is
/// the list with the form as typed and the error beside its field.
pub(super) async fn add_product(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Form(form): Form<AddForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    require_admin(&state, &session).await?;
    let stock = form.stock.trim();
    let request = match stock.parse::<u64>() {
        Err(_) if !stock.is_empty() => Err(ApiError::invalid_field(
            "stock",
            "a whole number of units, 0 or more",
        )),
        parsed => new_product_request(AddProductRequest {
            sku: form.sku.trim().to_owned(),
            name: form.name.trim().to_owned(),
            price: form.price.trim().to_owned(),
            currency: form.currency.trim().to_uppercase(),
            description: Some(form.description.trim().to_owned()),
            image_url: Some(form.image_url.trim().to_owned()),
            stock: parsed.ok(),
        }),
    };
    let added = match request {
        Ok(product) => add_product_as(&state, caller(&session), context, product).await,
        Err(error) => Err(error),
    };
    match added {
        Ok((product_id, position)) => Ok(see_result(
            &format!("/app/admin/products/{product_id}"),
            position,
        )),
        Err(ApiError::Forbidden(_)) => Err(ErrorPage::forbidden()),
        Err(error) => {
            let status = match &error {
                ApiError::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let (name, message) = refusal_text(error)?;
            let form = add_form(&form).with_error(&name, message);
            let template =
                products_template(&state, &session, &ProductsQuery::default(), form).await?;
            Ok(page(status, &template))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AtParam {
    at: Option<String>,
}

/// What the product page shows besides the product.
#[derive(Debug, Default)]
struct ProductShown {
    edit: Option<PageForm>,
    stock: Option<PageForm>,
    retire_error: Option<String>,
}

fn edit_form(row: &ProductRow) -> PageForm {
    PageForm {
        fields: vec![
            field("name", "Name", "", true, row.name.clone()),
            field(
                "description",
                "Description",
                "",
                false,
                row.description.clone(),
            ),
            field(
                "price",
                "Price",
                "",
                true,
                amount_text(row.price, &row.currency),
            ),
            field(
                "image_url",
                "Image",
                "https:// address; empty removes it",
                false,
                row.image_url.clone().unwrap_or_default(),
            ),
        ],
        error: None,
    }
}

fn stock_form(quantity: String, reason: String) -> PageForm {
    PageForm {
        fields: vec![
            field(
                "quantity",
                "Units to add",
                "negative to remove, e.g. -2",
                true,
                quantity,
            ),
            field(
                "reason",
                "Reason",
                "a delivery, a count, damage",
                true,
                reason,
            ),
        ],
        error: None,
    }
}

pub(super) async fn product(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<AtParam>,
) -> Result<Response, ErrorPage> {
    let template = product_template(
        &state,
        &session,
        &id,
        params.at.as_deref(),
        ProductShown::default(),
    )
    .await?;
    Ok(page(StatusCode::OK, &template))
}

async fn product_template(
    state: &AppState,
    session: &SignedIn,
    id: &str,
    at: Option<&str>,
    shown: ProductShown,
) -> Result<AdminProductPage, ErrorPage> {
    let (chrome, is_admin) = admin_chrome(state, session, &[View::Products], at).await?;
    let product_id: ProductId = id.parse().map_err(|_| ErrorPage::not_found())?;
    let row = orders_projectors::query::products::get(state.pool(), product_id.as_uuid())
        .await
        .map_err(|error| ErrorPage::internal(anyhow::Error::new(error)))?
        .ok_or_else(ErrorPage::not_found)?;
    Ok(AdminProductPage {
        chrome,
        is_admin,
        currency: row.currency.clone(),
        edit: shown.edit.unwrap_or_else(|| edit_form(&row)),
        stock: shown
            .stock
            .unwrap_or_else(|| stock_form(String::new(), String::new())),
        line: StockLine::from(&row),
        retire_error: shown.retire_error,
    })
}

/// A change of the product page's forms, through `change_catalog_as`; a refusal is
/// the page again with the error beside its field (or the retire button).
async fn change_and_show(
    state: &AppState,
    session: &SignedIn,
    context: RequestContext,
    id: &str,
    change: Result<CatalogChange, ApiError>,
    refused: impl FnOnce(String, String) -> ProductShown,
) -> Result<Response, ErrorPage> {
    let product_id: ProductId = id.parse().map_err(|_| ErrorPage::not_found())?;
    let changed = match change {
        Ok(change) => change_catalog_as(state, caller(session), context, product_id, change).await,
        Err(error) => Err(error),
    };
    match changed {
        Ok(position) => Ok(see_result(
            &format!("/app/admin/products/{product_id}"),
            position,
        )),
        Err(ApiError::NotFound(_)) => Err(ErrorPage::not_found()),
        Err(ApiError::Forbidden(_)) => Err(ErrorPage::forbidden()),
        Err(error) => {
            let status = match &error {
                ApiError::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let (name, message) = refusal_text(error)?;
            let template =
                product_template(state, session, id, None, refused(name, message)).await?;
            Ok(page(status, &template))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EditForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    image_url: String,
}

pub(super) async fn change_product(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    require_admin(&state, &session).await?;
    let change = product_change_request(ChangeProductRequest {
        name: Some(form.name.trim().to_owned()),
        description: Some(form.description.trim().to_owned()),
        price: Some(form.price.trim().to_owned()),
        image_url: Some(form.image_url.trim().to_owned()),
    })
    .map(CatalogChange::Change);
    let typed = PageForm {
        fields: vec![
            field("name", "Name", "", true, form.name.clone()),
            field(
                "description",
                "Description",
                "",
                false,
                form.description.clone(),
            ),
            field("price", "Price", "", true, form.price.clone()),
            field(
                "image_url",
                "Image",
                "https:// address; empty removes it",
                false,
                form.image_url.clone(),
            ),
        ],
        error: None,
    };
    change_and_show(&state, &session, context, &id, change, |name, message| {
        ProductShown {
            edit: Some(typed.with_error(&name, message)),
            ..ProductShown::default()
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct StockForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn adjust_stock(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<StockForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    require_admin(&state, &session).await?;
    let change = form
        .quantity
        .trim()
        .parse::<i64>()
        .map_err(|_| ApiError::invalid_field("quantity", "a whole number of units, e.g. 5 or -2"))
        .map(|quantity| CatalogChange::AdjustStock {
            quantity,
            reason: form.reason.trim().to_owned(),
        });
    let typed = stock_form(form.quantity.clone(), form.reason.clone());
    change_and_show(&state, &session, context, &id, change, |name, message| {
        ProductShown {
            stock: Some(typed.with_error(&name, message)),
            ..ProductShown::default()
        }
    })
    .await
}

pub(super) async fn retire_product(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    require_admin(&state, &session).await?;
    change_and_show(
        &state,
        &session,
        context,
        &id,
        Ok(CatalogChange::Retire),
        |_, message| ProductShown {
            retire_error: Some(message),
            ..ProductShown::default()
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PurchasesQuery {
    status: Option<String>,
    owner: Option<String>,
    cursor: Option<String>,
    at: Option<String>,
}

pub(super) async fn purchases(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    Query(params): Query<PurchasesQuery>,
) -> Result<Response, ErrorPage> {
    let (status, template) = purchases_template(&state, &session, &params, None).await?;
    Ok(page(status, &template))
}

/// The purchases list: a filter that is not a status or a user id says so above
/// the list (a 422) rather than showing every purchase.
async fn purchases_template(
    state: &AppState,
    session: &SignedIn,
    params: &PurchasesQuery,
    form_error: Option<String>,
) -> Result<(StatusCode, AdminPurchasesPage), ErrorPage> {
    let (chrome, is_admin) =
        admin_chrome(state, session, &[View::Purchases], params.at.as_deref()).await?;
    let status_text = params.status.clone().unwrap_or_default().trim().to_owned();
    let owner_text = params.owner.clone().unwrap_or_default().trim().to_owned();
    let filter = PurchaseListParams {
        status: Some(status_text.clone()),
        owner: None,
        limit: None,
        cursor: params.cursor.clone().filter(|cursor| !cursor.is_empty()),
    };
    let status = filter.status();
    let owner = match owner_text.as_str() {
        "" => Ok(None),
        text => text
            .parse::<uuid::Uuid>()
            .map(Some)
            .map_err(|_| ApiError::invalid_field("owner", "not a user id (a UUID)")),
    };
    let (found, filter_error) = match (status, owner) {
        (Ok(status), Ok(owner)) => {
            let found = purchases_page(state, owner, status, None, filter.cursor.as_deref())
                .await
                .map_err(list_refusal)?;
            (Some(found), None)
        }
        (Err(error), _) | (_, Err(error)) => (None, Some(error.to_string())),
    };
    let code = if filter_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let (purchases, next_cursor) = match found {
        Some(found) => (found.items, found.next_cursor),
        None => (Vec::new(), None),
    };
    Ok((
        code,
        AdminPurchasesPage {
            chrome,
            is_admin,
            status: status_text.clone(),
            owner: owner_text,
            statuses: status_options(&status_text),
            purchases: purchases
                .iter()
                .map(|purchase| AdminPurchaseLine {
                    buttons: status_buttons(&purchase.status),
                    purchase: PurchaseSummary::from(purchase),
                })
                .collect(),
            next_cursor,
            filter_error,
            form_error,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct StatusForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    status: String,
    /// The list's filters, kept across the redirect.
    #[serde(default)]
    list_status: String,
    #[serde(default)]
    list_owner: String,
}

/// A Ship, Deliver or Cancel button (administrators only, as `POST
/// /admin/purchases/{id}/status`); back to the list as it was filtered.
pub(super) async fn set_status(
    State(state): State<Arc<AppState>>,
    session: SignedIn,
    context: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<StatusForm>,
) -> Result<Response, ErrorPage> {
    session.check_form(&state, &headers, &form.csrf)?;
    require_admin(&state, &session).await?;
    let purchase_id: PurchaseId = id.parse().map_err(|_| ErrorPage::not_found())?;
    let params = PurchasesQuery {
        status: Some(form.list_status.clone()),
        owner: Some(form.list_owner.clone()),
        ..PurchasesQuery::default()
    };
    match set_status_as(&state, caller(&session), context, purchase_id, &form.status).await {
        Ok(position) => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in [("status", &form.list_status), ("owner", &form.list_owner)] {
                if !value.trim().is_empty() {
                    query.append_pair(key, value.trim());
                }
            }
            if let Some(position) = position {
                query.append_pair("at", &position.to_string());
            }
            Ok(see_other(&format!(
                "/app/admin/purchases?{}",
                query.finish()
            )))
        }
        Err(ApiError::NotFound(_)) => Err(ErrorPage::not_found()),
        Err(ApiError::Forbidden(_)) => Err(ErrorPage::forbidden()),
        Err(ApiError::Internal(error)) => Err(ErrorPage::internal(error)),
        Err(other) => {
            let (_, template) =
                purchases_template(&state, &session, &params, Some(other.to_string())).await?;
            Ok(page(StatusCode::CONFLICT, &template))
        }
    }
}
