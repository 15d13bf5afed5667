package dbusapi

import (
	"sort"
	"strings"
)

// The introspection data the service returns. docs/dbus-api.md embeds the
// same text (TestIntegrationIntrospect compares them); change both
// together, and never change a signature within a version.

// managerXML is returned for the manager object (api.DBusPath).
const managerXML = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.notifyd.Notifyd1.Manager">
    <method name="Subscribe">
      <arg name="filter" type="s" direction="in"/>
      <arg name="options" type="a{sv}" direction="in"/>
      <arg name="subscription" type="o" direction="out"/>
    </method>
    <method name="Sources">
      <arg name="sources" type="a(sssasssttt)" direction="out"/>
    </method>
    <method name="History">
      <arg name="since_seq" type="t" direction="in"/>
      <arg name="filter" type="s" direction="in"/>
      <arg name="records" type="h" direction="out"/>
      <arg name="count" type="u" direction="out"/>
    </method>
    <method name="AttachKeyWatch">
      <arg name="queue" type="h" direction="out"/>
      <arg name="owner" type="s" direction="out"/>
    </method>
    <property name="Version" type="u" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Epoch" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Seq" type="t" access="read"/>
    <property name="Subscribers" type="u" access="read"/>
    <property name="Published" type="t" access="read"/>
    <property name="Deliveries" type="t" access="read"/>
    <property name="Drops" type="t" access="read"/>
    <property name="Denials" type="t" access="read"/>
    <property name="HistoryLength" type="u" access="read"/>
    <property name="HistoryLowSeq" type="t" access="read"/>
  </interface>
` + stdXML + `  <node name="subscription"/>
</node>
`

// subscriptionXML is returned for a subscription object.
const subscriptionXML = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.notifyd.Notifyd1.Subscription">
    <method name="Cancel"/>
    <signal name="Started">
      <arg name="epoch" type="t"/>
      <arg name="seq" type="t"/>
      <arg name="resumed" type="b"/>
      <arg name="recovered" type="b"/>
      <arg name="snapshot_seq" type="t"/>
      <arg name="snapshot_count" type="u"/>
    </signal>
    <signal name="Event">
      <arg name="seq" type="t"/>
      <arg name="time_usec" type="t"/>
      <arg name="source" type="s"/>
      <arg name="subtype" type="s"/>
      <arg name="origin" type="s"/>
      <arg name="tag" type="i"/>
      <arg name="object" type="s"/>
      <arg name="snapshot" type="b"/>
      <arg name="removed" type="b"/>
      <arg name="key_id" type="i"/>
      <arg name="key_aux" type="i"/>
      <arg name="key_type" type="s"/>
      <arg name="key_description" type="s"/>
      <arg name="major" type="u"/>
      <arg name="minor" type="u"/>
      <arg name="device" type="s"/>
      <arg name="sector" type="t"/>
      <arg name="usb_name" type="s"/>
      <arg name="usb_busnum" type="q"/>
      <arg name="usb_devnum" type="q"/>
      <arg name="usb_vendor" type="q"/>
      <arg name="usb_product" type="q"/>
      <arg name="usb_error" type="u"/>
      <arg name="props" type="a{ss}"/>
      <arg name="raw" type="ay"/>
    </signal>
    <signal name="Loss">
      <arg name="seq" type="t"/>
      <arg name="time_usec" type="t"/>
      <arg name="source" type="s"/>
      <arg name="origin" type="s"/>
      <arg name="count" type="t"/>
      <arg name="estimated" type="b"/>
      <arg name="from_seq" type="t"/>
      <arg name="to_seq" type="t"/>
      <arg name="tag" type="i"/>
      <arg name="reason" type="s"/>
    </signal>
    <signal name="Ended">
      <arg name="reason" type="s"/>
    </signal>
    <property name="Owner" type="s" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Filter" type="s" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="Policy" type="s" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="QueueLength" type="u" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="QueueDepth" type="u" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Delivered" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Lost" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="LossEvents" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Denied" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <property name="Sources" type="as" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
    <property name="DeniedSources" type="a(ss)" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
    </property>
  </interface>
` + stdXML + `</node>
`

// stdXML lists the standard interfaces every object implements.
const stdXML = `  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="properties" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
`

// parentXML lists child nodes (the caller's own subscriptions under the
// subscription parent).
func parentXML(children []string) string {
	sort.Strings(children)
	var b strings.Builder
	b.WriteString(`<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
`)
	b.WriteString(`  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
`)
	for _, c := range children {
		b.WriteString(`  <node name="` + c + `"/>` + "\n")
	}
	b.WriteString("</node>\n")
	return b.String()
}
