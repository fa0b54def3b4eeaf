--- Ghost text: Neovim's own `vim.lsp.inline_completion` (0.12+) or `dg.virt` (0.10/0.11, extmarks),
--- and accepting all of it, its next line or its next word.
local config = require('dg.config')
local M = {}

M.defaults = {
  enabled = true,
  native = 'auto', -- 'auto': vim.lsp.inline_completion where Neovim has it; false: always dg.virt
  debounce_ms = 75, -- dg.virt: wait after a keystroke before asking the server
}

function M.validate(opts, problems)
  local is = config.is
  return config.check('ghost', opts, M.defaults, {
    enabled = { is.boolean, 'true or false' },
    native = { function(v) return v == 'auto' or type(v) == 'boolean' end, "'auto', true or false" },
    debounce_ms = { function(v) return is.number(v) and v >= 0 end, 'a number of milliseconds >= 0' },
  }, problems)
end

local function native()
  local choice = config.options.ghost.native
  if choice == 'auto' then
    return vim.lsp.inline_completion ~= nil
  end
  return choice and vim.lsp.inline_completion ~= nil
end

function M.attach(client, bufnr)
  if not config.options.ghost.enabled then
    return
  end
  if native() then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  else
    require('dg.virt').attach(client, bufnr)
  end
end

--- The part of `text` that accepting a `line` or a `word` inserts (all of it for `all`).
function M.piece(text, kind)
  if kind == 'line' then
    local lead = text:match('^\r?\n') or ''
    return lead .. (text:sub(#lead + 1):match('^[^\r\n]*') or '')
  elseif kind == 'word' then
    local space = text:match('^%s*')
    local rest = text:sub(#space + 1)
    return space .. (rest:match('^[%w_]+') or rest:match('^[^%w_%s]+') or '')
  end
  return text
end

--- Insert what accepting `kind` of `text` adds, where `text` replaces `span` ({row, col, end_row, end_col},
--- 0-based bytes), and put the cursor after it. Text already typed inside the span is kept.
function M.insert(bufnr, span, text, kind)
  local typed = table.concat(vim.api.nvim_buf_get_text(bufnr, span.row, span.col, span.end_row, span.end_col, {}), '\n')
  local row, col, end_row, end_col = span.row, span.col, span.end_row, span.end_col
  if kind ~= 'all' and vim.startswith(text, typed) then
    text = M.piece(text:sub(#typed + 1), kind)
    row, col = end_row, end_col
  end
  local lines = vim.split(text, '\r?\n')
  vim.api.nvim_buf_set_text(bufnr, row, col, end_row, end_col, lines)
  local last = #lines == 1 and col + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + #lines, last })
end

--- Accept `kind` ('all' | 'line' | 'word') of the ghost text in `bufnr`; false when none is shown.
function M.accept(bufnr, kind)
  if not native() then
    return require('dg.virt').accept(bufnr, kind)
  end
  if kind == 'all' then
    return vim.lsp.inline_completion.get({ bufnr = bufnr })
  end
  return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function(item)
    local text = type(item.insert_text) == 'string' and item.insert_text or item.insert_text.value
    local r, cursor = item.range, vim.api.nvim_win_get_cursor(0)
    local span = r and { row = r.start.row, col = r.start.col, end_row = r.end_.row, end_col = r.end_.col }
      or { row = cursor[1] - 1, col = cursor[2], end_row = cursor[1] - 1, end_col = cursor[2] }
    M.insert(bufnr, span, text, kind)
  end })
end

--- Hide the ghost text in `bufnr`; false when none is shown.
function M.dismiss(bufnr)
  if not native() then
    return require('dg.virt').dismiss(bufnr)
  end
  return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function() end })
end

return M
