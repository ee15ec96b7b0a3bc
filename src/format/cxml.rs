//! cXML 1.2: OrderRequest and PunchOutOrderMessage become orders, ShipNoticeRequest a
//! delivery note. Every other cXML document is ignored with its name; an envelope holding an
//! element no cXML DTD defines is rejected as broken.
//!
//! cXML has no namespace, so elements are matched by local name in the empty namespace.
//! Element and attribute names follow the cXML 1.2.063 DTDs (cXML.dtd, Fulfill.dtd).

use super::Parsed;
use super::xml::{self, Element};
use crate::error::Reject;
use crate::model::{
    Address, Decimal, DeliveryLine, DeliveryNote, Document, Operation, Order, OrderLine,
};

/// The elements ending in Request, Response or Message that the cXML 1.2.014 to 1.2.063
/// DTDs (cXML.dtd, Fulfill.dtd, InvoiceDetail.dtd) define: the documents a Request, Response
/// or Message can hold. A name outside this list is not cXML at all, so the document is
/// broken rather than one to ignore.
const KNOWN_DOCUMENTS: &[&str] = &[
    "ApprovalRequest",
    "AuthRequest",
    "AuthResponse",
    "CatalogUploadRequest",
    "ComponentConsumptionRequest",
    "ConfirmationRequest",
    "ContractRequest",
    "ContractStatusUpdateRequest",
    "CopyRequest",
    "DataAvailableMessage",
    "DataRequest",
    "DataResponse",
    "GetPendingRequest",
    "GetPendingResponse",
    "IntegrationMessage",
    "InvoiceDetailRequest",
    "MasterAgreementRequest",
    "OrderRequest",
    "OrderStatusRequest",
    "OrganizationChangeMessage",
    "OrganizationDataRequest",
    "OrganizationDataResponse",
    "PaymentProposalRequest",
    "PaymentRemittanceRequest",
    "ProductActivityMessage",
    "ProductReplenishmentMessage",
    "ProfileRequest",
    "ProfileResponse",
    "ProviderDoneMessage",
    "ProviderSetupRequest",
    "ProviderSetupResponse",
    "PunchOutOrderMessage",
    "PunchOutSetupRequest",
    "PunchOutSetupResponse",
    "PurchaseRequisitionRequest",
    "QualityInspectionDecisionRequest",
    "QualityInspectionRequest",
    "QualityInspectionResultRequest",
    "QualityNotificationRequest",
    "QuoteMessage",
    "QuoteRequest",
    "ReceiptRequest",
    "SalesOrderRequest",
    "ServiceEntryRequest",
    "ShipNoticeRequest",
    "StatusUpdateRequest",
    "SubscriptionChangeMessage",
    "SubscriptionContentRequest",
    "SubscriptionContentResponse",
    "SubscriptionListRequest",
    "SubscriptionListResponse",
    "SubscriptionStatusUpdateRequest",
    "SupplierChangeMessage",
    "SupplierDataRequest",
    "SupplierDataResponse",
    "SupplierListRequest",
    "SupplierListResponse",
    "TimeCardInfoRequest",
    "TimeCardRequest",
];

/// Reads a `<cXML>` envelope (the root element).
pub fn parse(root: &Element, file: &str) -> Result<Parsed, Reject> {
    let Some(wrapper) = ["Request", "Message", "Response"]
        .iter()
        .find_map(|name| root.child("", name))
    else {
        let why = "cXML document without Request, Message or Response";
        return Err(Reject::malformed(file, why));
    };
    // Message and Response may start with a Status before the document element.
    let body = wrapper.children.iter().find(|c| !c.is("", "Status"));
    let documents = |document| Ok(Parsed::Documents(vec![document]));
    match body {
        Some(b) if b.is("", "OrderRequest") => documents(order_request(root, b, file)?),
        Some(b) if b.is("", "PunchOutOrderMessage") => documents(punch_out(root, b, file)?),
        Some(b) if b.is("", "ShipNoticeRequest") => documents(ship_notice(b, file)?),
        Some(b) if b.ns.is_empty() && KNOWN_DOCUMENTS.contains(&b.name.as_str()) => {
            Ok(Parsed::Ignored(format!(
                "{file} is a cXML {}, not a delivery note or order",
                b.name
            )))
        }
        Some(b) => {
            let why = format!(
                "<{}> holds <{}>, which no cXML DTD defines",
                wrapper.name, b.name
            );
            Err(Reject::malformed(file, why))
        }
        None if wrapper.name == "Response" => {
            let code = wrapper.child("", "Status").and_then(|s| s.attr("code"));
            let what = match code {
                Some(code) => format!("a cXML Response (status {code})"),
                None => "a cXML Response".to_owned(),
            };
            Ok(Parsed::Ignored(format!(
                "{file} is {what}, not a delivery note or order"
            )))
        }
        None => {
            let why = format!("the cXML <{}> is empty", wrapper.name);
            Err(Reject::malformed(file, why))
        }
    }
}

/// OrderRequest: header attributes and addresses from OrderRequestHeader, one line per
/// ItemOut.
fn order_request(root: &Element, request: &Element, file: &str) -> Result<Document, Reject> {
    let header = request.child("", "OrderRequestHeader");
    let attr = |name| header.and_then(|h| h.attr(name));
    let operation = match attr("type") {
        None | Some("new") => Operation::New,
        Some("update") => Operation::Update,
        Some("delete") => Operation::Delete,
        Some(other) => {
            let why = "is not new, update or delete";
            return Err(Reject::bad_value(file, None, "operation", other, why));
        }
    };
    let (currency, total) = total(header, file)?;
    Ok(Document::Order(Order {
        format: "cxml-order-request".to_owned(),
        supplier: None,
        payload_id: root.attr("payloadID").map(str::to_owned),
        order_id: attr("orderID").map(str::to_owned),
        operation,
        date: xml::date(file, "date", attr("orderDate"))?,
        currency,
        total,
        buyer_cookie: None,
        ship_to: header.and_then(ship_to),
        document_ref: header
            .and_then(|h| h.child("", "DocumentReference"))
            .and_then(|r| r.attr("payloadID"))
            .map(str::to_owned),
        lines: order_lines(request, "ItemOut", file)?,
        file: file.to_owned(),
    }))
}

/// PunchOutOrderMessage: the shopping cart a buyer brings back; dated by the envelope's
/// timestamp, one line per ItemIn.
fn punch_out(root: &Element, message: &Element, file: &str) -> Result<Document, Reject> {
    let header = message.child("", "PunchOutOrderMessageHeader");
    let (currency, total) = total(header, file)?;
    Ok(Document::Order(Order {
        format: "cxml-punchout-order-message".to_owned(),
        supplier: None,
        payload_id: root.attr("payloadID").map(str::to_owned),
        order_id: None,
        operation: Operation::New,
        date: xml::date(file, "date", root.attr("timestamp"))?,
        currency,
        total,
        buyer_cookie: message.text_at(&[("", "BuyerCookie")]),
        ship_to: header.and_then(ship_to),
        document_ref: None,
        lines: order_lines(message, "ItemIn", file)?,
        file: file.to_owned(),
    }))
}

/// Currency and amount of `header/Total/Money`.
fn total(
    header: Option<&Element>,
    file: &str,
) -> Result<(Option<String>, Option<Decimal>), Reject> {
    let money = header.and_then(|h| h.at(&[("", "Total"), ("", "Money")]));
    let currency = money.and_then(|m| m.attr("currency")).map(str::to_owned);
    let amount = xml::decimal(file, None, "total", money.and_then(Element::text))?;
    Ok((currency, amount))
}

/// `ShipTo/Address`; `None` when it carries none of the fields eingang keeps.
fn ship_to(header: &Element) -> Option<Address> {
    let address = header.at(&[("", "ShipTo"), ("", "Address")])?;
    let postal = address.child("", "PostalAddress");
    let field = |name| postal.and_then(|p| p.text_at(&[("", name)]));
    let streets: Vec<&str> = postal
        .into_iter()
        .flat_map(|p| p.children_named("", "Street"))
        .filter_map(Element::text)
        .collect();
    let country = postal
        .and_then(|p| p.child("", "Country"))
        .and_then(|c| c.attr("isoCountryCode").or_else(|| c.text()));
    let found = Address {
        name: address.text_at(&[("", "Name")]),
        street: (!streets.is_empty()).then(|| streets.join(", ")),
        postal_code: field("PostalCode"),
        city: field("City"),
        country: country.map(str::to_owned),
    };
    (found != Address::default()).then_some(found)
}

/// One order line per `item` child (ItemOut or ItemIn, which share their content model).
fn order_lines(parent: &Element, item: &str, file: &str) -> Result<Vec<OrderLine>, Reject> {
    let items = parent.children_named("", item).enumerate();
    items
        .map(|(index, item)| {
            let line_no = line_no(item.attr("lineNumber"), index);
            let line = Some(line_no.as_str());
            let detail = item.child("", "ItemDetail");
            let price = detail.and_then(|d| d.at(&[("", "UnitPrice"), ("", "Money")]));
            Ok(OrderLine {
                supplier_part_id: item.text_at(&[("", "ItemID"), ("", "SupplierPartID")]),
                supplier_part_aux_id: item
                    .text_at(&[("", "ItemID"), ("", "SupplierPartAuxiliaryID")]),
                description: detail.and_then(description),
                quantity: xml::decimal(file, line, "quantity", item.attr("quantity"))?,
                unit: detail.and_then(|d| d.text_at(&[("", "UnitOfMeasure")])),
                unit_price: xml::decimal(file, line, "unit_price", price.and_then(Element::text))?,
                line_no,
            })
        })
        .collect()
}

/// ShipNoticeRequest: the header gives number and date, each ShipNoticePortion the order it
/// delivers against, each ShipNoticeItem a line.
fn ship_notice(request: &Element, file: &str) -> Result<Document, Reject> {
    let header = request.child("", "ShipNoticeHeader");
    // noticeDate is required by Fulfill.dtd; the others stand in for senders that omit it.
    let date = ["noticeDate", "shipmentDate", "deliveryDate"]
        .iter()
        .find_map(|name| header.and_then(|h| h.attr(name)));
    let mut order_refs: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for portion in request.children_named("", "ShipNoticePortion") {
        let order_ref = portion
            .child("", "OrderReference")
            .and_then(|r| r.attr("orderID"))
            .map(str::to_owned);
        if let Some(order) = &order_ref
            && !order_refs.contains(order)
        {
            order_refs.push(order.clone());
        }
        for item in portion.children_named("", "ShipNoticeItem") {
            lines.push(ship_notice_line(
                item,
                lines.len(),
                order_ref.clone(),
                file,
            )?);
        }
    }
    Ok(Document::DeliveryNote(DeliveryNote {
        format: "cxml-ship-notice".to_owned(),
        supplier: None,
        number: header
            .and_then(|h| h.attr("shipmentID"))
            .unwrap_or_default()
            .to_owned(),
        date: xml::date(file, "date", date)?,
        order_refs,
        lines,
        file: file.to_owned(),
        date_text: None,
    }))
}

/// One ShipNoticeItem. Its `lineNumber` is the line of the order (Fulfill.dtd); the ship
/// notice's own line number, when sent, is `shipNoticeLineNumber`.
fn ship_notice_line(
    item: &Element,
    index: usize,
    order_ref: Option<String>,
    file: &str,
) -> Result<DeliveryLine, Reject> {
    let order_line = item.attr("lineNumber");
    let line_no = line_no(item.attr("shipNoticeLineNumber").or(order_line), index);
    let line = Some(line_no.as_str());
    Ok(DeliveryLine {
        supplier_part_id: item.text_at(&[("", "ItemID"), ("", "SupplierPartID")]),
        buyer_part_id: item.text_at(&[("", "ItemID"), ("", "BuyerPartID")]),
        description: item.child("", "ShipNoticeItemDetail").and_then(description),
        quantity: xml::decimal(file, line, "quantity", item.attr("quantity"))?,
        unit: item.text_at(&[("", "UnitOfMeasure")]),
        order_ref,
        order_line: order_line.map(str::to_owned),
        line_no,
        ..DeliveryLine::default()
    })
}

/// The document's line number, else the 1-based position.
fn line_no(given: Option<&str>, index: usize) -> String {
    given.map_or_else(|| (index + 1).to_string(), str::to_owned)
}

/// `Description` of an ItemDetail: its own text (the long form), else its ShortName.
fn description(detail: &Element) -> Option<String> {
    let description = detail.child("", "Description")?;
    description
        .text()
        .or_else(|| description.child("", "ShortName").and_then(Element::text))
        .map(xml::one_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Parsed, Reject> {
        parse(&xml::parse(text, "po.xml", 64, true).unwrap(), "po.xml")
    }

    fn order(text: &str) -> Order {
        match parse_text(text) {
            Ok(Parsed::Documents(mut docs)) => match docs.pop() {
                Some(Document::Order(order)) => order,
                other => panic!("not an order: {other:?}"),
            },
            other => panic!("no documents: {other:?}"),
        }
    }

    #[test]
    fn order_request_header_and_lines() {
        let order = order(
            r#"<cXML payloadID="p1"><Request><OrderRequest>
            <OrderRequestHeader orderID="PO-1" orderDate="2026-11-20T09:00:00+01:00" type="update">
              <Total><Money currency="EUR">10.50</Money></Total>
              <ShipTo><Address><Name>Mayer &amp; Söhne</Name><PostalAddress>
                <Street>Hof 2</Street><Street>Tor 3</Street><PostalCode>10115</PostalCode>
                <City>Berlin</City><Country isoCountryCode="DE">Deutschland</Country>
              </PostalAddress></Address></ShipTo>
              <DocumentReference payloadID="p0"/>
            </OrderRequestHeader>
            <ItemOut quantity="3" lineNumber="7"><ItemID><SupplierPartID>A1</SupplierPartID>
              </ItemID><ItemDetail><UnitPrice><Money currency="EUR">3.50</Money></UnitPrice>
              <Description xml:lang="de"><ShortName>Kurz</ShortName>Lange
                 Beschreibung</Description><UnitOfMeasure>EA</UnitOfMeasure></ItemDetail>
            </ItemOut><ItemOut quantity="1"/></OrderRequest></Request></cXML>"#,
        );
        assert_eq!(order.operation, Operation::Update);
        assert_eq!(order.date.unwrap().to_string(), "2026-11-20");
        assert_eq!(order.total.unwrap().to_string(), "10.5");
        assert_eq!(order.document_ref.as_deref(), Some("p0"));
        let ship_to = order.ship_to.unwrap();
        assert_eq!(ship_to.name.as_deref(), Some("Mayer & Söhne"));
        assert_eq!(ship_to.street.as_deref(), Some("Hof 2, Tor 3"));
        assert_eq!(ship_to.country.as_deref(), Some("DE"));
        let first = &order.lines[0];
        assert_eq!(first.line_no, "7");
        assert_eq!(first.description.as_deref(), Some("Lange Beschreibung"));
        assert_eq!(first.unit_price.unwrap().to_string(), "3.5");
        assert_eq!(order.lines[1].line_no, "2");
    }

    #[test]
    fn bad_values_name_line_and_field() {
        let err = parse_text(
            r#"<cXML><Request><OrderRequest><OrderRequestHeader orderID="1"/>
               <ItemOut lineNumber="4" quantity="1,5"/></OrderRequest></Request></cXML>"#,
        );
        let err = err.unwrap_err().to_string();
        assert_eq!(
            err,
            r#"po.xml: line 4: quantity "1,5" is not a decimal number"#
        );
        let err = parse_text(
            r#"<cXML><Request><OrderRequest><OrderRequestHeader type="cancel"/>
               </OrderRequest></Request></cXML>"#,
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("operation \"cancel\"")
        );
    }

    #[test]
    fn other_documents_are_ignored_and_unknown_ones_rejected() {
        let invoice = "<cXML><Request><InvoiceDetailRequest/></Request></cXML>";
        match parse_text(invoice) {
            Ok(Parsed::Ignored(why)) => assert_eq!(
                why,
                "po.xml is a cXML InvoiceDetailRequest, not a delivery note or order"
            ),
            other => panic!("{other:?}"),
        }
        let status = r#"<cXML><Response><Status code="200"/></Response></cXML>"#;
        assert!(matches!(parse_text(status), Ok(Parsed::Ignored(_))));
        let garbage = "<cXML><Request><GarbageRequest/></Request></cXML>";
        assert!(matches!(parse_text(garbage), Err(Reject::Malformed { .. })));
    }
}
