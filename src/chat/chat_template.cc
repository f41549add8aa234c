#include "chat/chat_template.h"

#include "chat/interpreter.h"
#include "chat/parser.h"
#include "core/error.h"

namespace pensieve::chat {

ChatTemplate ChatTemplate::parse(std::string source) {
  ChatTemplate t;
  t.program_ = parse_program(std::move(source));
  return t;
}

const std::string& ChatTemplate::source() const { return program_->source; }

std::string ChatTemplate::render(const nlohmann::ordered_json& context,
                                 const TemplateLimits& limits) const {
  if (!context.is_object()) fail("chat template: the render context must be a JSON object");
  Interpreter interp(*program_, limits);
  try {
    return interp.render(Value::from_json(context));
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    fail(ErrorKind::resource, "chat template: out of memory while rendering");
  } catch (const std::exception& e) {
    fail("chat template: {}", e.what());
  }
}

}  // namespace pensieve::chat
